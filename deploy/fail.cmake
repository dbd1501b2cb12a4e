# cmake -DMESSAGE=... -P fail.cmake: fails with MESSAGE (a deploy test whose tool is missing).
message(FATAL_ERROR "${MESSAGE}")
