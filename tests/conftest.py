"""Shared pytest setup: repo root on sys.path, a modest thread count (the test machine's cores are
shared), and Triton's CPU interpreter where there is no GPU (it must be chosen before triton is
imported). On a CUDA machine the kernels are compiled and tested for real: the interpreter is never
forced there. Fixtures: `llm_server`, a local OpenAI-compatible endpoint for the llm reflector's
tests (test_reflectors, test_reliability); `micro_base`, a pretrained `micro` base model, and
`log_rows`, a run's log without its wall clock (test_reliability, test_errors); `enc`, the BPE
tokenizer (test_tasks, test_pretrain_rows). The project's modules are imported inside the fixtures,
after the interpreter is chosen."""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402  (importing torch does not import triton)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, torch.get_num_threads()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out: not a failure
        pass


@pytest.fixture
def llm_server():
    """start(replies) -> (url, requests): an OpenAI-compatible server on 127.0.0.1 (port 0) that
    answers POST /v1/chat/completions from `replies` [(status, body bytes[, delay s])] in turn (the
    last one repeats; the list may be changed while it runs), and records every request with the
    status it got. A malformed request gets HTTP 400."""
    servers = []

    def start(replies):
        requests = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                    ok = (self.path == "/v1/chat/completions" and isinstance(body["model"], str)
                          and body["messages"][-1]["role"] == "user"
                          and isinstance(body["messages"][-1]["content"], str))
                except (ValueError, KeyError, IndexError, TypeError):
                    body, ok = None, False
                status, payload, *delay = replies[min(len(requests), len(replies) - 1)]
                status, payload = (status, payload) if ok else (400, b'{"error": "bad request"}')
                requests.append({"path": self.path, "body": body, "ok": ok, "status": status,
                                 "auth": self.headers.get("Authorization")})
                delay = delay[0] if delay else 0
                if delay:  # (a test may watch time.sleep: only a delayed reply calls it)
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", requests

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture(scope="module")
def micro_base(tmp_path_factory):
    """The path of a `micro` base (2 layers, 64 wide, pretrained for 30 steps), once per module."""
    import train
    from world import pretrain
    out = str(tmp_path_factory.mktemp("base"))
    pretrain.pretrain(train.PRESETS["micro"], out, "cpu", log=lambda *a: None)
    return os.path.join(out, "model.pt")


@pytest.fixture
def log_rows():
    """rows(run_dir) -> log.jsonl without the wall clock (the only field allowed to differ between
    identical runs)."""
    def rows(run_dir):
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            return [{k: v for k, v in json.loads(line).items() if k != "wall_s"} for line in f]
    return rows


@pytest.fixture(scope="module")
def enc():
    from world import tasks
    return tasks.build_tokenizer()
