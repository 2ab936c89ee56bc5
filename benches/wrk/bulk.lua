-- POST /v1/bulk of BULK (default 1000) puts of random keys, VALUE_BYTES each.
package.path = os.getenv("WRK_DIR") .. "/?.lua;" .. package.path
require("common")
BULK = tonumber(os.getenv("BULK") or "1000")
local head = '{"op":"put","entity":"user","key":"'
local tail = '","value":"' .. VALUE .. '"}'
request = function()
   local ops = {}
   for i = 1, BULK do ops[i] = head .. random_key() .. tail end
   return wrk.format("POST", "/v1/bulk", JSON,
      '{"operations":[' .. table.concat(ops, ",") .. ']}')
end
