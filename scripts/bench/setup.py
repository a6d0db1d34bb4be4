#!/usr/bin/env python3
"""Set-up shared by the HTTP benchmarks: log in as the bootstrap admin,
create one agent, log in as it and open TICKETS tickets (4 clients in
parallel). Writes WORK/ids (one ticket id a line) and WORK/token (the
agent's bearer token). Usage: setup.py BASE PASSWORD TICKETS WORK"""
import json, sys, urllib.request, concurrent.futures as cf
base, password, tickets, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def call(path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req) as r:
        return json.load(r)
admin = call("/api/v1/auth/login", {"email": "admin@bench.example", "password": password})["token"]
call("/api/v1/users", {"name": "Bench Agent", "email": "agent@bench.example", "role": "agent",
                       "password": "bench-agent-pw"}, admin)
agent = call("/api/v1/auth/login", {"email": "agent@bench.example", "password": "bench-agent-pw"})["token"]
def ticket(i):
    return call("/api/v1/tickets", {"subject": f"Bench ticket {i}", "body": "Opening message.",
        "channel": "email", "requester": {"email": f"customer{i % 500}@bench.example", "name": "Customer"}},
        agent)["id"]
with cf.ThreadPoolExecutor(4) as pool:
    ids = list(pool.map(ticket, range(tickets)))
open(f"{work}/ids", "w").write("\n".join(ids) + "\n")
open(f"{work}/token", "w").write(agent)
