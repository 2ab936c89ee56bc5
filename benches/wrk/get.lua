-- GET of a random existing key.
package.path = os.getenv("WRK_DIR") .. "/?.lua;" .. package.path
require("common")
request = get_request
