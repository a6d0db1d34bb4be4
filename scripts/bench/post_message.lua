-- wrk: add a message to a random ticket, as one logged-in agent.
-- BENCH_IDS names a file of ticket ids (one a line); BENCH_TOKEN is the bearer token.
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do
  ids[#ids + 1] = line
end
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
}
local body = '{"body":"Any news on this? Thanks.","channel":"email"}'

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

function request()
  local id = ids[math.random(#ids)]
  return wrk.format("POST", "/api/v1/tickets/" .. id .. "/messages", headers, body)
end
