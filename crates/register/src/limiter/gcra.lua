-- GCRA (generic cell rate algorithm) on one key, on Redis's own clock.
-- KEYS[1]: the key's theoretical arrival time (TAT), in microseconds.
-- ARGV[1]: microseconds between two permits (may be fractional);
-- ARGV[2]: the burst; ARGV[3]: the permits asked for (at most the burst).
-- Returns {1, 0} when the permits are taken, {0, WAIT} otherwise, WAIT in
-- microseconds. The key expires when its bucket would be full again.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local permits = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local next_tat = tat + permits * interval
local allowed_at = next_tat - burst * interval
if allowed_at > now then
  return {0, math.ceil(allowed_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, 0}
