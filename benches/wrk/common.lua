-- Shared by the wrk scripts of benches/server.sh. Keys "k0".."k{KEYS-1}" under the
-- entity "user"; values are VALUE_BYTES characters (a JSON string in the envelope).
-- Knobs from the environment: KEYS (default 100000), VALUE_BYTES (default 100).
KEYS = tonumber(os.getenv("KEYS") or "100000")
VALUE_BYTES = tonumber(os.getenv("VALUE_BYTES") or "100")
VALUE = string.rep("v", VALUE_BYTES)
ENVELOPE = '{"value":"' .. VALUE .. '"}'
JSON = { ["Content-Type"] = "application/json" }

local counter = 0
function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
end

function init(args)
   math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function random_key()
   return "k" .. math.random(0, KEYS - 1)
end

function get_request()
   return wrk.format("GET", "/v1/kv/user/" .. random_key())
end

function value_request()
   return wrk.format("GET", "/v1/kv/user/" .. random_key() .. "/value")
end

function put_request()
   return wrk.format("PUT", "/v1/kv/user/" .. random_key(), JSON, ENVELOPE)
end
