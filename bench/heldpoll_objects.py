# heldpoll_objects.py — run inside gdb attached to a heraldd built with debug info
# (gdb -p PID -batch -x bench/heldpoll_objects.py), while it holds long-polls: walks the broker's
# HTTP connections from main()'s hd_broker, and for up to HELD_SAMPLE (100) connections whose
# request is held, reads the heap chunk size of every block that connection keeps (the
# connection, its request and the request's strings, the long-poll transport's poll_req, the
# hd_device and the router watch). Prints the average per held poll, block by block, as chunk
# sizes (malloc_usable_size + 8, what the heap really spends). Reads only; bench/heldpoll_mem.sh
# runs it. Part of herald-bench's tooling, not of the broker.
import os
from collections import OrderedDict

import gdb

SAMPLE = int(os.environ.get("HELD_SAMPLE", "100"))


SIZE_T = gdb.lookup_type("unsigned long").pointer()


def chunk(p):
    """The heap chunk behind block p: glibc keeps its size (low 3 bits are flags) in the word
    before the block. Read from memory, not asked of malloc_usable_size(): calling a function
    in the process is what gdb cannot always do cleanly (on this VM it fails to restore the
    extended register state)."""
    p = int(p)
    if not p:
        return 0
    return int(gdb.Value(p - 8).cast(SIZE_T).dereference()) & ~7


gdb.execute("set pagination off")
gdb.execute("frame function main", to_string=True)
b = gdb.parse_and_eval("b")
c = b["http"]["conns"]
poll_t = gdb.lookup_type("poll_req").pointer()
rows = OrderedDict()
seen = 0


def add(what, n):
    rows[what] = rows.get(what, 0) + n


while int(c) and seen < SAMPLE:
    r = c["active"]
    if int(r) and int(r["held"]):
        seen += 1
        add("hd_http_conn (socket, timer, parser, 64 B peer name)", chunk(c))
        if int(c["buf"]) and not int(c["shared"]):
            add("conn read buffer (unparsed bytes)", chunk(c["buf"]))
        add("hd_http_req", chunk(r))
        add("request target (url sbuf)", chunk(r["url"]["p"]))
        add("request path copy", chunk(r["path"]))
        add(f"header array (capacity {int(r['capheaders'])})", chunk(r["headers"]))
        for i in range(int(r["nheaders"])):
            h = r["headers"][i]
            add("header names (one block each)", chunk(h["name"]["p"]))
            add("header values (one block each)", chunk(h["value"]["p"]))
        for arr, n, what in ((r["params"], r["nparams"], "route params"),
                             (r["query"], r["nquery"], "query params")):
            add(f"{what}: array", chunk(arr))
            for i in range(int(n)):
                add(f"{what}: names and values", chunk(arr[i]["name"]) + chunk(arr[i]["value"]))
        add("request body", chunk(r["body"]["p"]))
        p = r["abort_ud"].cast(poll_t)
        add("longpoll poll_req (with its uv_timer_t)", chunk(p))
        add("hd_device (from device_auth)", chunk(p["dev"]))
        add("router hd_watch (+ 1 link per app)", chunk(p["watch"]))
    c = c["next"]

total = sum(rows.values())
print(f"HELD POLLS SAMPLED {seen}")
for what, n in rows.items():
    print(f"{n / max(seen, 1):8.0f}  {what}")
print(f"{total / max(seen, 1):8.0f}  TOTAL heap per held poll (chunks)")
