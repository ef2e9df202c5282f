"""Every benchmark mode behind `mistral bench`, each measuring the path users run:

- offline (`offline.py`): load, prefill, decode, time to first token, peak RSS and the bandwidth
  roofline of one request through the engine, as `mistral run` executes it;
- peers (`llama_cpp.py`): the same protocol through llama-cpp-python, in its own process;
- concurrency (`concurrency.py`): N requests at once through the engine;
- HTTP (`http.py`): N streaming completions at once against any OpenAI-compatible server;
- load test (`loadtest.py`): many clients, some hanging up, against a server, with pass/fail checks.

`figures.py` holds what they share: the figures' one shape, summaries, the prompts.
"""
