# Runs under MicroPython: parse an NMEA capture with the firmware's parser and print
# one JSON line per fix: [unix_s, ms, lat, lon, speed_kmh, heading, fix_type, sats].
import json
import sys

import nmea

p = nmea.Parser()
with open(sys.argv[1], "rb") as f:
    while True:
        chunk = f.read(512)
        if not chunk:
            break
        p.feed(chunk)
p.flush()
for fix in p.fixes:
    print(json.dumps([fix.time(), fix.ms, fix.lat, fix.lon, fix.speed_kmh(),
                      fix.heading() if fix.course_cdeg is not None else None,
                      fix.fix_type(), fix.sats]))
print(json.dumps({"sentences": p.sentences, "bad_checksums": p.bad_checksums}))
