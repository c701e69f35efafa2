"""HTTP serving: an OpenAI-compatible FastAPI frontend talking to an engine process over ZMQ + msgpack.

Modules, top-down: `launch` (process start-up and shutdown), `frontend` (the app factory), `openai_routes` and
`native_routes` (endpoints), `streaming` (JSON or SSE answers, abort on disconnect), `generation` (the engine
requests behind one HTTP request), `requests` (API request -> engine requests), `prompt_encoder` (length guard and
tokenization off the event loop), `formatting` (usage, logprobs, SSE), `protocol` (schemas), `errors`,
`middleware` (API key, bounded body reads, request counts), `metrics`, `state`, `engine_client` (frontend side
of the link), `engine_proc` (the engine process loop), `wire` (the msgpack messages).
"""
