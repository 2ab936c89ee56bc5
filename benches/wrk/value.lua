-- GET …/value (the raw bytes) of a random existing key.
package.path = os.getenv("WRK_DIR") .. "/?.lua;" .. package.path
require("common")
request = value_request
