"""
llm.py: the `llm` reflector. GEPA's reflection meta-prompt, sent to any OpenAI-compatible chat
endpoint (Ollama, vLLM, a hosted API) over the standard library's HTTP client; the reply's last
fenced block is the new context.

    from world.llm import LLMReflector
    reflect = LLMReflector("http://localhost:11434/v1", "qwen3:8b", max_tokens=48)
    reflect("rule: ?", records)   # -> the proposed context, or an exception

It lives apart from reflectors.py (which builds it by name: make_reflector("llm", url=..., ...))
because it is the one reflector that talks to the outside world: retries, backoff, timeouts and
the two failures that stop a run (fast_context.ReflectorError) are its own business. Why each
failure is treated as it is: see reflectors.py's docstring, the `llm` item.
"""

import json
import os
import re
import time
import urllib.error
import urllib.request

from fast_context import ReflectorError, word_count
from harness.cli import URL, UserError, positive
from world.tasks import VALID_OPS_TEXT


META_PROMPT = """I provided an assistant with the following context to perform a task for me:
```
{current}
```
The following are examples of task inputs provided to the assistant along with the assistant's \
response for each of them, and some feedback on how the assistant's response could be better:
```
{examples}
```
The assistant only understands contexts in this small language, one item per line:
- an instruction: `rule: OP` or `rule: OP then OP` (1 to 3 ops, applied left to right), with ops \
from: {ops}. Example: `rule: add 3 then reverse`.
- demonstrations: `demo: 3 1 2 -> 5 4 6 ; 7 0 1 -> 9 2 3`
After the context it reads a labelled input line such as `in: <digits>` and answers with digits.
Your task is to write a new context for the assistant. Read the inputs, the generated outputs \
and the feedback (it holds the expected answers), work out the transformation, and state it with \
every niche fact (such as a substitution table) in the language above, in at most {max_tokens} \
tokens. Provide the new context within ``` blocks."""


def format_records(records):
    """GEPA's layout of the records: one '# Example k' block with Inputs / Outputs / Feedback."""
    return "\n\n".join(f"# Example {k}\n## Inputs\n{r['inputs']}\n\n## Generated Outputs\n"
                       f"{str(r['outputs']).strip()}\n\n## Feedback\n{r['feedback']}"
                       for k, r in enumerate(records, 1))


def fenced(text):
    """The text in the last ``` fenced block (a language tag on the fence line dropped)."""
    blocks = re.findall(r"```(?:[\w+-]*\n)?(.*?)```", text, re.S)
    if not blocks or not blocks[-1].strip():
        raise ValueError("the reply has no non-empty ``` fenced block")
    return blocks[-1].strip()


class LLMReflector:
    """POSTs GEPA's meta-prompt to {url}/chat/completions and returns the fenced context.

    url: the API root, e.g. http://localhost:11434/v1 (Ollama). The key, if any, comes from the
    environment variable OPENAI_API_KEY. Transport errors and HTTP 5xx/429 are retried `retries`
    times after backoff * 2**attempt seconds; a timeout is not (a server that hangs once hangs
    again); any other failure (HTTP 4xx, not a chat completion, a refusal, no fence, an empty or
    over-budget context) raises at once. `attempts` counts HTTP requests.

    ReflectorError (the run stops) instead of a failed proposal: until the endpoint has answered
    once with a chat completion (`answered`), a refused or unresolvable connection, a timeout or an
    HTTP 4xx other than 429, at once; a failed call that is the `fail_limit`-th in a row
    (`failures`; None: never), naming the endpoint and its last answer; calls failing in a row for
    `max_wait` seconds (default 4 x timeout: the whole wait a dead endpoint costs, tries and
    backoff included); and `fail_limit` replies in a row with no ``` fence from a model that never
    wrote one. A reply without a fence from a model that has written one is a rejected proposal,
    and the endpoint that sent it is alive. `progress` (a tqdm bar, or None) shows each wait."""

    def __init__(self, url, model, timeout=30, retries=2, backoff=1.0, temperature=None,
                 max_tokens=48, count_tokens=None, fail_limit=None, max_wait=None):
        self.url, self.model, self.timeout, self.retries = url.rstrip("/"), model, timeout, retries
        self.backoff, self.temperature, self.max_tokens = backoff, temperature, max_tokens
        self.count_tokens, self.attempts = count_tokens or word_count, 0
        self.fail_limit, self.failures, self.answered = fail_limit, 0, False
        self.max_wait = 4 * timeout if max_wait is None else max_wait
        self.failing_since = None  # when the calls began to fail in a row (None: the last worked)
        self.unfenced, self.fenced_once, self.progress = 0, False, None

    def meta_prompt(self, current_prompt, records):
        return META_PROMPT.format(current=current_prompt, examples=format_records(records),
                                  ops=VALID_OPS_TEXT, max_tokens=self.max_tokens)

    def __call__(self, current_prompt, records):
        start = time.monotonic()
        try:
            reply = self.complete(self.meta_prompt(current_prompt, records), start)
        except ReflectorError:
            raise
        except Exception as e:  # a failed call, unless it is the fail_limit-th in a row
            self.failures += 1
            self.failing_since = self.failing_since or start
            if self.fail_limit and self.failures >= self.fail_limit:
                self._give_up(f"failed {self.failures} calls in a row", e)
            if time.monotonic() - self.failing_since >= self.max_wait:
                self._give_up(self._waited(), e)
            raise
        self.failures, self.failing_since = 0, None  # it answered: the endpoint works
        return self.proposal(reply)

    def proposal(self, reply):
        """A reply's fenced context (ValueError if none, or over budget: a rejected proposal)."""
        try:
            text = fenced(reply)
        except ValueError as e:
            self.unfenced += 1
            if not self.fenced_once and self.fail_limit and self.unfenced >= self.fail_limit:
                raise ReflectorError(f"the model {self.model} at {self.url} answered "
                                     f"{self.unfenced} calls, none with a ``` fenced block; the "
                                     "new context must come inside ``` fences (try another "
                                     "--llm-model)") from e
            raise
        self.fenced_once = True
        n = self.count_tokens(text)
        if n > self.max_tokens:
            raise ValueError(f"proposal too long: {n} tokens > {self.max_tokens}")
        return text

    def _give_up(self, what, e):
        raise ReflectorError(" ".join(f"the llm reflector at {self.url} {what}; its last "
                                      f"answer: {e}".split())) from e

    def _waited(self):
        return (f"failed every call for {time.monotonic() - self.failing_since:.0f} s (the limit: "
                f"{self.max_wait:g} s, 4 x --llm-timeout)")

    def _show(self, text):
        """The wait on the progress line (restored by passing None)."""
        bar = self.progress
        if bar is None:
            return
        if text is not None:
            self._postfix = getattr(bar, "postfix", None)
            bar.set_postfix_str(text)
        else:
            bar.postfix = getattr(self, "_postfix", None)
            bar.refresh()

    def complete(self, prompt, start=None):
        """One chat completion -> the reply's text. `start`: when the call began (its failing
        streak's clock)."""
        url = self.url + "/chat/completions"
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = "Bearer " + os.environ["OPENAI_API_KEY"]
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        streak = self.failing_since or start or time.monotonic()  # if this call fails too
        try:
            raw = self._tries(request, url, streak)
        finally:
            self._show(None)
        try:
            message = json.loads(raw)["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(f"not a chat completion from {url}: {raw[:80]!r}") from e
        self.answered = True  # the endpoint works: from now on its failures are transient
        if not isinstance(message, dict) or message.get("refusal"):
            raise ValueError(f"the model refused: {str(message)[:80]}")
        return str(message.get("content") or "")

    def _tries(self, request, url, streak):
        """The HTTP tries of one call -> the raw reply; each try and backoff within what is left
        of max_wait since `streak` began."""
        for attempt in range(self.retries + 1):
            left = self.max_wait - (time.monotonic() - streak)
            if attempt and left <= 0:  # no retry past the bound
                raise RuntimeError(f"no reply from {url} within {self.max_wait:g} s")
            wait = max(min(self.timeout, left), 0.001)
            self._show(f"waiting on {url} (try {attempt + 1} of {self.retries + 1}, up to "
                       f"{wait:.0f} s)")
            self.attempts += 1
            try:
                with urllib.request.urlopen(request, timeout=wait) as response:
                    return response.read()
            except urllib.error.HTTPError as e:
                final = e.code < 500 and e.code != 429
                if final and not self.answered:  # a wrong URL, model or key: stop the run
                    raise ReflectorError(f"{url} answered HTTP {e.code} ({e.reason}) to the "
                                         "first request; check --llm-url and --llm-model "
                                         "(and OPENAI_API_KEY)") from e
                if final or attempt == self.retries:
                    raise RuntimeError(f"HTTP {e.code} from {url}: {e.reason}") from e
            except urllib.error.URLError as e:  # no connection: refused, unknown host, timeout
                if not self.answered:  # nothing listens there: stop the run
                    raise ReflectorError(f"cannot reach {url}: {e.reason}; is the server "
                                         "running, and is --llm-url right?") from e
                if attempt == self.retries or isinstance(e.reason, TimeoutError):
                    raise RuntimeError(f"no reply from {url}: {e}") from e
            except TimeoutError as e:  # connected, no reply in time: a hung server
                if not self.answered:
                    raise ReflectorError(f"no reply from {url} within {wait:g} s to the first "
                                         "request; is the server up (and --llm-timeout long "
                                         "enough)?") from e
                raise RuntimeError(f"no reply from {url} within {wait:g} s") from e
            except OSError as e:  # connected, then reset
                if attempt == self.retries:
                    raise RuntimeError(f"no reply from {url}: {e}") from e
            time.sleep(min(self.backoff * 2 ** attempt,
                           max(self.max_wait - (time.monotonic() - streak), 0)))
        raise AssertionError("unreachable")


def show_waits(reflect, bar):
    """An llm reflector shows on the progress line `bar` when it waits on its endpoint."""
    if isinstance(reflect, LLMReflector):
        reflect.progress = bar


def options(reflector, url, model, timeout):
    """The llm reflector's options from train.py's flags -> dict, or None for another reflector;
    UserError when the flags do not fit the reflector."""
    if reflector != "llm":
        if url or model:
            raise UserError("--llm-url and --llm-model are for --reflector llm")
        return None
    if not (url and model):
        raise UserError("--reflector llm needs --llm-url and --llm-model")
    return dict(url=url, model=model, timeout=timeout)


def add_flags(parser):
    """The llm reflector's flags of `python train.py run` (options reads them)."""
    parser.add_argument("--llm-url", type=URL, default=None,
                        help="llm: API root, e.g. http://localhost:11434/v1")
    parser.add_argument("--llm-model", default=None, help="llm: the model's name on that server")
    parser.add_argument("--llm-timeout", type=positive(float), default=30.0,
                        help="llm: seconds per request; failing for 4x this long stops the run")
