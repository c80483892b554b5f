"""numpy/OpenBLAS on the same CPU cores: the CPU's own limit for each bench row.

Reads the rows (JSON) on stdin, prints {row name: median ms} on stdout.
conv is im2col + GEMM; attention is softmax(Q K^T) V per head.
"""
import json, sys, time
import numpy as np

cap_ms = float(sys.argv[1]) if len(sys.argv) > 1 else 15000.0
rows = json.load(sys.stdin)
rng = np.random.default_rng(0)
out = {}

def timed(fn):
    fn()
    ts = []
    start = time.perf_counter()
    while len(ts) < 5:
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
        if (time.perf_counter() - start) * 1e3 > cap_ms:
            break
    return float(np.median(ts))

for r in rows:
    p, k = r["p"], r["kind"]
    try:
        if k == "matmul":
            a = rng.standard_normal((p["m"], p["k"]), dtype=np.float32); w = rng.standard_normal((p["n"], p["k"]), dtype=np.float32)
            out[r["name"]] = timed(lambda: a @ w.T)
        elif k == "conv":
            n, c, h, wd, kk, o = p["n"], p["cin"], p["h"], p["w"], p["k"], p["cout"]
            x = rng.standard_normal((n, c, h, wd), dtype=np.float32); w = rng.standard_normal((o, c * kk * kk), dtype=np.float32)
            pad = (kk - 1) // 2
            def conv():
                xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
                cols = np.lib.stride_tricks.sliding_window_view(xp, (kk, kk), axis=(2, 3))  # n c h w kh kw
                cols = cols.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kk * kk, h * wd)
                return w @ cols[0]
            out[r["name"]] = timed(conv)
        elif k == "attention":
            b, nq, nk, hd, d = p["b"], p["nq"], p["nk"], p["heads"], p["d"]
            if b * hd * nq * nk * 4 > 2**31:
                out[r["name"]] = "skipped (score matrix over 2 GiB)"; continue
            q = rng.standard_normal((b * hd, nq, d), dtype=np.float32); kt = rng.standard_normal((b * hd, nk, d), dtype=np.float32); v = rng.standard_normal((b * hd, nk, d), dtype=np.float32)
            def att():
                s = (q @ kt.transpose(0, 2, 1)) * np.float32(1 / np.sqrt(d))
                s -= s.max(-1, keepdims=True); np.exp(s, out=s); s /= s.sum(-1, keepdims=True)
                return s @ v
            out[r["name"]] = timed(att)
        elif k == "group_norm":
            x = rng.standard_normal((p["n"], p["groups"], -1 if False else p["c"] // p["groups"] * p["h"] * p["w"]), dtype=np.float32)
            out[r["name"]] = timed(lambda: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5))
        elif k == "layer_norm":
            x = rng.standard_normal((p["rows"], p["d"]), dtype=np.float32)
            out[r["name"]] = timed(lambda: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5))
    except Exception as e:  # report, never drop a row
        out[r["name"]] = f"failed ({e})"
print(json.dumps(out))
