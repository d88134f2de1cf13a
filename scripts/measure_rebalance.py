"""restart->ready and take-over times of `weir run user-clicks` on `weir dev-broker`.
usage: measure.py WEIR_BINARY OUTDIR"""
import json, os, re, signal, subprocess, sys, time, urllib.request, statistics

weir, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
env = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
env["RUST_LOG"] = "info"
procs = []

def spawn(name, args):
    f = open(f"{out}/{name}.err", "w")
    p = subprocess.Popen([weir] + args, stdout=subprocess.PIPE, stderr=f, env=env, text=True)
    procs.append(p)
    p.errfile = f"{out}/{name}.err"
    return p

def wait(cond, what, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f"timeout waiting for {what}")

def http_addr(p):
    def find():
        m = re.search(r"http://([0-9.]+:[0-9]+)/", open(p.errfile).read())
        return m and m.group(1)
    return wait(find, "http address")

def readyz(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/readyz", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return None
    except Exception:
        return None

def tasks(v):
    return sorted(t for th in v["threads"].values() for t in th["tasks"])

def consumed(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as r:
        total = 0.0
        for line in r.read().decode().splitlines():
            if line.startswith("weir_records_consumed_total") and 'topic="user_clickstream"' in line:
                total += float(line.split()[-1])
        return total

try:
    broker = spawn("broker", ["dev-broker", "--partitions", "4"])
    addr = wait(lambda: broker.stdout.readline().strip().removeprefix("embedded Kafka broker at "), "broker")
    lines = "".join(f"User {i % 100 + 1} clicked on /page1 at {1763719200 + i // 1000}.{i % 1000:03d}\n" for i in range(200000))
    subprocess.run([weir, "produce", "user_clickstream", "--brokers", addr], input=lines, text=True, env=env, capture_output=True, check=True)

    def run(name, state):
        return spawn(name, ["run", "user-clicks", "--brokers", addr, "--state-dir", state, "--http", "127.0.0.1:0"])

    # restart -> ready, with state on disk
    a = run("a0", f"{out}/state-a")
    ha = http_addr(a)
    wait(lambda: readyz(ha), "a ready")
    wait(lambda: consumed(ha) >= 200000, "all input consumed")
    restarts = []
    for i in range(4):
        a.send_signal(signal.SIGTERM); a.wait(30)
        t0 = time.time()
        a = run(f"a{i+1}", f"{out}/state-a")
        ha = http_addr(a)
        wait(lambda: readyz(ha), "a ready")
        restarts.append(time.time() - t0)
    # take-over after SIGKILL: b takes a's tasks
    b = run("b0", f"{out}/state-b")
    hb = http_addr(b)
    wait(lambda: (va := readyz(ha)) and (vb := readyz(hb)) and len(tasks(va)) + len(tasks(vb)) == 8 and tasks(vb), "split")
    takeovers = []
    for i in range(3):
        a.kill(); a.wait()
        t0 = time.time()
        wait(lambda: (vb := readyz(hb)) and len(tasks(vb)) == 8, "b takes over")
        takeovers.append(time.time() - t0)
        a = run(f"a-again{i}", f"{out}/state-a")
        ha = http_addr(a)
        wait(lambda: (va := readyz(ha)) and (vb := readyz(hb)) and len(tasks(va)) + len(tasks(vb)) == 8 and tasks(va), "split again")
    fmt = lambda xs: f"median {statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"
    print(f"restart->ready: {fmt(restarts)}")
    print(f"take-over after SIGKILL: {fmt(takeovers)}")
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
