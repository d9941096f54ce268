"""The Scrapy side of bench/crawl.py: crawls the generated site from one start
URL, following every link, and yields the same fields haul's crawl job
extracts (text with whitespace collapsed, a list of tags).

Run: scrapy runspider crawl_spider.py -a start=URL -O out.jsonl:jsonlines
"""

import scrapy


def text(selection) -> str | None:
    """All text nodes of the first match, whitespace collapsed; None when nothing matches."""
    if not selection:
        return None
    return " ".join(" ".join(selection[0].css("::text").getall()).split())


class SiteSpider(scrapy.Spider):
    name = "site"

    def __init__(self, start: str, **kwargs):
        super().__init__(**kwargs)
        self.start_url = start

    async def start(self):
        # Not `start_urls`: their requests skip the duplicate filter, so the
        # home page would be fetched (and yielded) again when a page links to it.
        yield scrapy.Request(self.start_url, callback=self.parse)

    def parse(self, response):
        yield {
            "url": response.url,
            "status": response.status,
            "title": text(response.css("title")),
            "heading": text(response.css("h1")),
            "price": text(response.css("span.price")),
            "tags": [" ".join(" ".join(tag.css("::text").getall()).split()) for tag in response.css("li.tag")],
            "description": text(response.css("p.description")),
        }
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)
