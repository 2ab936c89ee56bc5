-- The same request shape as get.lua, for the hello-world ceiling (which answers "ok").
package.path = os.getenv("WRK_DIR") .. "/?.lua;" .. package.path
require("common")
request = get_request
