"""Helpers shared by the tests: fixture notebooks for the tool tests, a tiny learner for the lesson tests,
a local HTTP server for the download tests.

Test files import them (`from conftest import make_nb`): pytest puts tests/ on sys.path. The `server`
fixture needs no import.
"""
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import torch

# The unit tests run on one thread: with torch's default (one per core) a loaded 2-core machine spent most of
# their time switching threads (455 s against 108 s measured). Each lesson still runs in its own kernel with
# torch's default threads, as the lessons' timing policy says.
torch.set_num_threads(1)

META = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
        'language_info': {'name': 'python'}}


def make_nb(path: Path, cells: list) -> Path:
    "Write a valid notebook: each cell is a code cell's source or (cell_type, source); sources are kept as given."
    new = {'code': nbformat.v4.new_code_cell, 'markdown': nbformat.v4.new_markdown_cell,
           'raw': nbformat.v4.new_raw_cell}
    cells = [('code', c) if isinstance(c, str) else c for c in cells]
    nb = nbformat.v4.new_notebook(metadata=json.loads(json.dumps(META)))
    nb.cells = [new[kind](source=src, id=f'cell-{i}') for i, (kind, src) in enumerate(cells)]
    nbformat.validate(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    # json.dumps, not nbformat.write (which stores every source as a list of lines)
    path.write_text(json.dumps(nb, ensure_ascii=False, indent=1) + '\n', encoding='utf-8')
    return path


def dead_pid() -> int:
    "The process id of a process that has ended."
    p = subprocess.Popen(['true'])
    p.wait()
    return p.pid


def selected(request, test: str, param: str) -> list:
    "The values of `param` of the collected items of the test function named `test`, in collection order."
    return [i.callspec.params[param] for i in request.session.items if getattr(i, 'originalname', None) == test]


def help_into_closed_pipe(script: Path, cwd: Path) -> list:
    "`script --help | head -1`, three times (a BrokenPipeError showed in two runs of three): the completed runs."
    return [subprocess.run(f'{sys.executable} {script} --help | head -1', shell=True, capture_output=True, text=True,
                           cwd=cwd, timeout=60) for _ in range(3)]


def make_data(n_train=24, n_valid=10, bs=8, seed=0):
    "Linearly separable 2-class data in 5 dimensions, in loaders with batches of `bs` (validation: `bs` too)."
    from exp.nb_03 import ArrayDataset, DataLoader, Sampler
    from exp.nb_04 import DataBunch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_valid, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    tds, vds = ArrayDataset(x[:n_train], y[:n_train]), ArrayDataset(x[n_train:], y[n_train:])
    loader = lambda ds: DataLoader(ds, Sampler(ds, bs), batched=True)
    return DataBunch(loader(tds), loader(vds), c=2)


def make_learner(cbs=None, lr=0.1, groups=False, momentum=0., **data):
    "A linear model on `make_data(**data)` trained by SGD; `groups` puts weight and bias in two param groups."
    from exp.nb_04 import Learner
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2)
    params = [{'params': [model.weight]}, {'params': [model.bias]}] if groups else model.parameters()
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    return Learner(model, opt, torch.nn.functional.cross_entropy, make_data(**data), cbs=cbs)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits.append(self.path)
        if self.path not in self.server.routes: return self.send_error(404)
        body, sent, delay = self.server.routes[self.path]
        time.sleep(delay)
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body[:sent])  # sent < len(body): the connection closes early

    def log_message(self, *args): pass


class LocalServer:
    "An HTTP server on 127.0.0.1 only, serving in-memory files from a daemon thread; `hits` lists the paths requested."
    def __init__(self):
        self.srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
        self.srv.routes, self.srv.hits = {}, []
        self.hits = self.srv.hits
        threading.Thread(target=self.srv.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()

    def url(self, path, body=None, sent=None, delay=0.0):
        "URL for `path`; with a `body`, serve it (only its first `sent` bytes, after `delay` seconds)."
        if body is not None: self.srv.routes[path] = (body, len(body) if sent is None else sent, delay)
        return f'http://127.0.0.1:{self.srv.server_port}{path}'

    def mirror(self, prefix, files=None, sent=None):
        "Base URL `/prefix/` serving `files` (name -> bytes); `sent` maps a name to how many bytes to send."
        for k, b in (files or {}).items(): self.url(f'/{prefix}/{k}', b, (sent or {}).get(k))
        return self.url(f'/{prefix}/')

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def server():
    "A fresh LocalServer for one test, shut down after it."
    s = LocalServer()
    yield s
    s.close()


def closed_port_url(path='/'):
    "A loopback URL ending in `path` where nothing listens (connection refused at once)."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}{path}'


@pytest.fixture
def empty_data(tmp_path, monkeypatch):
    "An empty data folder named by FOUNDATIONS_DATA (the data tests add: no mirrors to download from)."
    d = tmp_path / 'data'
    d.mkdir()
    monkeypatch.setenv('FOUNDATIONS_DATA', str(d))
    return d
