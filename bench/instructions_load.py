"""Load for bench/instructions: a fixed number of requests over keep-alive connections.

    instructions_load.py MODE PER CONNECTIONS

MODE is deposit (POST /v1/keys with $BENCH_PUBKEY), capture (the same, saving every code to
$BENCH_CODES) or retrieve (POST /v1/retrievals of the codes in $BENCH_CODES, each once).
Prints the number of requests made; exits non-zero if any answer was not the expected 2xx.
"""

import http.client
import json
import os
import sys
import threading

MODE, PER, CONNECTIONS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PORT = int(os.environ["BENCH_PORT"])
CODES = os.environ["BENCH_CODES"]
failures = []


def connection():
    return http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)


def deposit(codes):
    c = connection()
    body = json.dumps({"public_key": os.environ["BENCH_PUBKEY"], "label": "bench"})
    headers = {
        "Authorization": "Bearer " + os.environ["BENCH_APP_KEY"],
        "Content-Type": "application/json",
    }
    for _ in range(PER):
        c.request("POST", "/v1/keys", body, headers)
        r = c.getresponse()
        answer = r.read()
        if r.status != 201:
            failures.append(r.status)
        else:
            codes.append(json.loads(answer)["code"])


def retrieve(codes):
    c = connection()
    headers = {
        "Authorization": "Bearer " + os.environ["BENCH_SERVICE_KEY"],
        "Content-Type": "application/json",
    }
    for code in codes:
        c.request("POST", "/v1/retrievals", json.dumps({"code": code}), headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            failures.append(r.status)


def run(target, args):
    threads = [threading.Thread(target=target, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if MODE in ("deposit", "capture"):
    codes = [[] for _ in range(CONNECTIONS)]
    run(deposit, codes)
    if MODE == "capture":
        with open(CODES, "w") as f:
            json.dump(codes, f)
    made = PER * CONNECTIONS
elif MODE == "retrieve":
    with open(CODES) as f:
        codes = json.load(f)
    run(retrieve, codes)
    made = sum(len(c) for c in codes)
else:
    sys.exit(f"unknown mode {MODE}")

if failures:
    sys.exit(f"{len(failures)} requests failed, e.g. HTTP {failures[0]}")
print(made)
