"""llama-cpp-python's OpenAI-compatible server with its top-logprobs sort made fast (manual checks only).

llama-cpp-python 0.3.36 builds each echoed token's top_logprobs by sorting the whole vocabulary in
Python, `sorted(zip(logprobs, range(V)), reverse=True)[:logprobs]`, even for `logprobs: 1`: with
gemma's 262k vocabulary that is ~1 s a prompt token on 2 busy cores (27 s for one 27-token TNEWS
request), which makes `scoring: completions` unusable. Here `sorted` in that module returns only the
32 largest (value, index) pairs, in the same order, found with numpy: every response is unchanged
for logprobs <= 32 (checked: identical bytes for the request in bench/RESULTS.md).

Run with llama-cpp-python's own interpreter (it is not a specrun dependency):
  /opt/llama/bin/python bench/llama_cpp_topk_server.py --model gemma-3-270m.gguf --n_ctx 512 --port 8080
"""

import builtins
import runpy
import sys

import llama_cpp.llama as module
import numpy as np

TOP = 32


def top_sorted(iterable, *, key=None, reverse=False):
    """sorted(), except for llama_cpp's zip(logprobs, range(V)) in reverse: its TOP largest pairs only."""
    if key is None and reverse and isinstance(iterable, zip):
        parts = iterable.__reduce__()[1]  # the zip's two iterators
        if len(parts) == 2:
            values = parts[0].__reduce__()[1][0]  # the array the first one iterates
            if isinstance(values, np.ndarray) and values.ndim == 1 and values.size > TOP:
                top = np.argpartition(-values, TOP)[:TOP]
                top = top[np.lexsort((-top, -values[top]))]  # value, then index, descending: as sorted(reverse=True)
                return [(values[i], int(i)) for i in top]
    return builtins.sorted(iterable, key=key, reverse=reverse)


if __name__ == "__main__":
    module.sorted = top_sorted
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
