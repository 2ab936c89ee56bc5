-- Envelope PUT ({"value": "<100 bytes>"}) of a random key of the key space (overwrites).
package.path = os.getenv("WRK_DIR") .. "/?.lua;" .. package.path
require("common")
request = put_request
