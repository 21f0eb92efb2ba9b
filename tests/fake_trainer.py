"""A stand-in trainer for local-runner tests: honours the result contract in
milliseconds. FAKE_MODE picks its behaviour: ok (default), fail, noresult, garbage,
sleep (FAKE_SECONDS), failodd (fails for odd trial indices), huge (a result over the
kubelet's 4,096-byte termination message), truncated (half a result document), oom
(allocates 400 MiB). Retraining: KUBENAS_EVALUATE_TEST adds a testAccuracy, and
KUBENAS_SAVE_MODEL is written (a stand-in file; exit 7 ModelNotSaved when it cannot be)."""

import hashlib
import json
import os
import sys
import time

architecture = json.loads(os.environ["KUBENAS_ARCHITECTURE"])
index = int(os.environ["KUBENAS_TRIAL_INDEX"])
mode = os.environ.get("FAKE_MODE", "ok")
result_file = os.environ["KUBENAS_RESULT_FILE"]
time.sleep(float(os.environ.get("FAKE_SECONDS", "0")))
if mode == "fail" or (mode == "failodd" and index % 2):
    with open(result_file, "w") as handle:
        json.dump({"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Failed", "reason": "InvalidArchitecture", "message": "no"}, handle)
    print("kubenas-trainer: InvalidArchitecture: no", file=sys.stderr)
    sys.exit(3)
if mode == "exit1":
    sys.exit(1)
if mode == "noresult":
    sys.exit(0)
if mode == "garbage":
    open(result_file, "w").write("{not json")
    sys.exit(0)
if mode == "oom":
    hog = b"x" * (400 * 2**20)  # past the test's memory limit: the kernel's OOM killer ends it
    print(len(hog))
if mode == "truncated":
    open(result_file, "w").write('{"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Succ')
    sys.exit(0)
accuracy = 0.5 + hashlib.sha256(json.dumps(architecture, sort_keys=True).encode()).digest()[0] / 512
result = {"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Succeeded",
          "validationAccuracy": [accuracy / 2, accuracy], "argv": sys.argv[1:], "threads": os.environ.get("OMP_NUM_THREADS")}
if os.environ.get("KUBENAS_EVALUATE_TEST") == "1":
    result["testAccuracy"] = round(accuracy - 0.01, 5)
if os.environ.get("KUBENAS_SAVE_MODEL"):
    try:
        with open(os.environ["KUBENAS_SAVE_MODEL"], "w") as handle:
            handle.write(f"fake state_dict of child {index}")
    except OSError as error:
        failed = {"apiVersion": "kubenas.io/v1alpha1", "kind": "TrialResult", "status": "Failed",
                  "reason": "ModelNotSaved", "message": str(error)}
        open(result_file, "w").write(json.dumps(failed))
        sys.exit(7)
if mode == "huge":
    result["padding"] = "x" * 6000  # the kubelet keeps the first 4,096 bytes: not JSON any more
with open(result_file, "w") as handle:
    json.dump(result, handle)
print(json.dumps(result))
