//! A whole processing chain end to end: CSV file → cleanse → remap → validate
//! → mask → SQLite, with rejected records counted and kept in the dead
//! letters, then fixed and replayed through the rest of the pipeline.

use std::path::Path;
use std::process::{Command, Output};

use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{AssertSqlSafe, Row};

const INPUT: &str = "id,name,email,phone,age
1,\"  ada   lovelace \",ADA@EXAMPLE.COM,13812345678,36
2,grace hopper,grace@example.com,13900001111,85
3,linus,not-an-email,13700002222,54
4,ken,ken@example.com,13600003333,
5,barbara,barbara@example.com,13500004444,abc
6,edsger,edsger@example.com,13400005555,200
,,,,
";

const JOB: &str = r#"
name = "customers"
parallelism = 1
error_limit = 5
dead_letter = { path = "rejected.jsonl" }

[source]
type = "file"
path = "customers.csv"

[[processors]]
type = "cleanse"
trim = true
collapse_whitespace = true
empty_to_null = true
case = { email = "lower" }
drop_records = "empty"

[[processors]]
type = "remap"
source = '''
.id = to_int!(.id)
.name = upcase(string!(.name))
if .age != null { .age = to_int!(.age) }
'''

[[processors]]
type = "validate"
key = "id"
on_invalid = "dead_letter"
rules = [
  { field = "email", regex = '^[^@\s]+@[^@\s]+\.[a-z]+$' },
  { field = "age", min = 0, max = 150 },
]

[[processors]]
type = "mask"
fields = { phone = "partial" }
keep_first = 3
keep_last = 2

[sink]
type = "sql"
url = "sqlite://customers.db"
table = "customers"
mode = "upsert"
key = ["id"]
"#;

fn haul(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_haul")).args(args).current_dir(dir).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

async fn rows(dir: &Path) -> Vec<(i64, String, String, String, Option<i64>)> {
    let url = format!("sqlite://{}", dir.join("customers.db").display());
    let pool = SqlitePoolOptions::new().connect(&url).await.unwrap();
    let rows = sqlx::query(AssertSqlSafe("select id, name, email, phone, age from customers order by id".to_string()))
        .fetch_all(&pool)
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect()
}

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("rejected.jsonl")).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[tokio::test]
async fn chain_cleans_transforms_validates_masks_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("customers.csv"), INPUT).unwrap();
    std::fs::write(dir.path().join("job.toml"), JOB).unwrap();

    let check = haul(dir.path(), &["check", "job.toml"]);
    assert!(check.status.success(), "{}", stderr(&check));
    let run = haul(dir.path(), &["run", "job.toml"]);
    let text = stderr(&run);
    assert!(run.status.success(), "{text}");
    assert!(text.contains("7 read, 3 written, 3 rejected"), "{text}");

    assert_eq!(
        rows(dir.path()).await,
        vec![
            (1, "ADA LOVELACE".into(), "ada@example.com".into(), "138******78".into(), Some(36)),
            (2, "GRACE HOPPER".into(), "grace@example.com".into(), "139******11".into(), Some(85)),
            (4, "KEN".into(), "ken@example.com".into(), "136******33".into(), None),
        ]
    );

    let letters = dead_letters(dir.path());
    let mut stages: Vec<(String, String)> = letters
        .iter()
        .map(|l| (l["stage"].as_str().unwrap().to_string(), l["record"]["id"].to_string().replace('"', "")))
        .collect();
    stages.sort();
    assert_eq!(
        stages,
        [("remap".into(), "5".into()), ("validate".into(), "3".into()), ("validate".into(), "6".into())]
    );
    assert!(letters.iter().all(|l| l["job"] == "customers" && l["shard"].is_string() && l["run"].is_string()));
    let age = letters.iter().find(|l| l["record"]["id"] == 6).unwrap();
    assert!(age["reason"].as_str().unwrap().contains("age"), "{age}");

    // Fix two of the three records, then replay: they go through validate and mask into the table.
    let fixed: Vec<String> = letters
        .into_iter()
        .map(|mut letter| {
            if letter["record"]["id"] == 3 {
                letter["record"]["email"] = "linus@example.com".into();
            }
            if letter["record"]["id"] == 6 {
                letter["record"]["age"] = 70.into();
            }
            letter.to_string()
        })
        .collect();
    std::fs::write(dir.path().join("rejected.jsonl"), fixed.join("\n") + "\n").unwrap();

    let listed = haul(dir.path(), &["deadletter", "list", "job.toml"]);
    assert!(stderr(&listed).contains("3 dead letters"), "{}", stderr(&listed));
    let replay = haul(dir.path(), &["deadletter", "replay", "job.toml"]);
    let text = stderr(&replay);
    assert!(replay.status.success(), "{text}");
    assert!(text.contains("replayed 3 dead letters"), "{text}");
    assert!(text.contains("2 written"), "{text}");
    assert!(text.contains("1 rejected again"), "{text}");

    let ids: Vec<i64> = rows(dir.path()).await.into_iter().map(|r| r.0).collect();
    assert_eq!(ids, [1, 2, 3, 4, 6]);
    let masked = rows(dir.path()).await.into_iter().find(|r| r.0 == 6).unwrap();
    assert_eq!(masked.3, "134******55");

    // Only the record still broken is pending, as a new dead letter.
    let listed = haul(dir.path(), &["deadletter", "list", "--output", "json", "job.toml"]);
    let pending: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["stage"], "remap");
}

#[tokio::test]
async fn dead_letters_in_a_table_can_be_fixed_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("customers.csv"), INPUT).unwrap();
    let job = JOB.replace(
        "dead_letter = { path = \"rejected.jsonl\" }",
        "dead_letter = { url = \"sqlite://dead.db\", table = \"dead_letters\" }",
    );
    std::fs::write(dir.path().join("job.toml"), job).unwrap();

    let run = haul(dir.path(), &["run", "job.toml"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let listed = haul(dir.path(), &["deadletter", "list", "--output", "json", "job.toml"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let letters: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    let shown = haul(dir.path(), &["deadletter", "show", "job.toml", letters[0]["id"].as_str().unwrap()]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown, letters[0]);

    // Fix the two records that failed validation, in the table itself.
    let url = format!("sqlite://{}", dir.path().join("dead.db").display());
    let pool = SqlitePoolOptions::new().connect(&url).await.unwrap();
    for letter in letters.iter().filter(|l| l["stage"] == "validate") {
        let mut record = letter["record"].clone();
        record["email"] = "fixed@example.com".into();
        record["age"] = 40.into();
        sqlx::query("update dead_letters set record = ? where id = ?")
            .bind(record.to_string())
            .bind(letter["id"].as_str().unwrap())
            .execute(&pool)
            .await
            .unwrap();
    }

    let replay = haul(dir.path(), &["deadletter", "replay", "job.toml"]);
    let text = stderr(&replay);
    assert!(replay.status.success(), "{text}");
    assert!(text.contains("2 written") && text.contains("1 rejected again"), "{text}");
    let ids: Vec<i64> = rows(dir.path()).await.into_iter().map(|r| r.0).collect();
    assert_eq!(ids, [1, 2, 3, 4, 6]);
    let listed = haul(dir.path(), &["deadletter", "list", "--output", "json", "job.toml"]);
    let pending: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
}
