-- 90 % GET / 10 % envelope PUT, random keys.
package.path = os.getenv("WRK_DIR") .. "/?.lua;" .. package.path
require("common")
request = function()
   if math.random(10) == 1 then return put_request() end
   return get_request()
end
