"""The PyPI `kubernetes` client's exec and port-forward (WebSocket channels) against a pod
on a real keelson node.

Usage: stream_e2e.py KUBECONFIG NAMESPACE POD CONTAINER PORT
The pod's container must serve "hello from the pod" over HTTP on PORT.
Exits non-zero (with the assertion that failed) unless every check holds.
"""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

kubeconfig, ns, pod, container, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
config.load_kube_config(config_file=kubeconfig)
v1 = client.CoreV1Api()


def exec_(command, stdin=None):
    """Run `command`; its stdout, stderr and exit code (with `stdin` written, then closed)."""
    resp = stream(v1.connect_get_namespaced_pod_exec, pod, ns, container=container, command=command,
                  stdin=stdin is not None, stdout=True, stderr=True, tty=False, _preload_content=False)
    assert resp.subprotocol == "v5.channel.k8s.io", resp.subprotocol
    if stdin is not None:
        resp.write_stdin(stdin)
        resp.close_channel(0)
    out, err = "", ""
    resp.run_forever(timeout=60)
    out += resp.read_stdout() or ""
    err += resp.read_stderr() or ""
    assert not resp.is_open(), "the exec did not end within 60 s"
    return out, err, resp.returncode


# --- exec: output, errors and the exit code ----------------------------------------
out, err, code = exec_(["sh", "-c", "echo out; echo err >&2; exit 3"])
assert (out, err, code) == ("out\n", "err\n", 3), (out, err, code)

# --- exec with stdin, closed by v5's CLOSE signal ----------------------------------
out, err, code = exec_(["sh", "-c", "tr a-z A-Z; echo done"], stdin="hello\nworld\n")
assert (out, code) == ("HELLO\nWORLD\ndone\n", 0), (out, err, code)

# --- exec, the all-in-one call (output preloaded) -----------------------------------
whole = stream(v1.connect_get_namespaced_pod_exec, pod, ns, container=container,
               command=["sh", "-c", "for i in $(seq 1 2000); do echo line $i; done"],
               stdin=False, stdout=True, stderr=False, tty=False)
lines = whole.splitlines()
assert len(lines) == 2000 and lines[0] == "line 1" and lines[-1] == "line 2000", (len(lines), lines[:2], lines[-2:])

# --- port-forward over WebSocket channels -----------------------------------------
for _ in range(2):
    pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, ns, ports=str(port))
    sock = pf.socket(port)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0], reply[:200]
    assert reply.endswith(b"hello from the pod\n"), reply[-200:]
    assert pf.error(port) is None, pf.error(port)
    pf.close()

# --- port-forward to a port nobody listens on: the error channel says so -------------
pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, ns, ports="9")
sock = pf.socket(9)
sock.setblocking(True)
sock.settimeout(30)
assert sock.recv(1024) == b""
assert pf.error(9) and "9" in pf.error(9), pf.error(9)
pf.close()

print("all checks passed")
