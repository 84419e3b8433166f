# Runs under MicroPython (or CPython): imports each named test module and calls its
# test_* functions; prints one JSON line {"passed": [...], "failed": {name: error}}.
import json
import sys

passed = []
failed = {}
for module_name in sys.argv[1:]:
    module = __import__(module_name)
    for name in sorted(dir(module)):
        if not name.startswith("test_"):
            continue
        try:
            getattr(module, name)()
            passed.append(module_name + "." + name)
        except Exception as e:  # report every failure, keep going
            failed[module_name + "." + name] = "%s: %s" % (type(e).__name__, e)
print(json.dumps({"passed": passed, "failed": failed}))
