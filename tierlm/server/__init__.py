"""HTTP serving: an OpenAI-compatible FastAPI frontend talking to an engine process over ZMQ + msgpack.

Modules: `protocol` (request/response schemas), `errors` (OpenAI-style error bodies), `wire` (the msgpack
messages between the processes), `engine_proc` (the engine process loop), `engine_client` (the frontend's
asyncio side of the link), `requests` (turning API requests into engine requests), `openai_routes`,
`native_routes`, `frontend` (the app factory), `middleware`, `metrics`, `launch` (process start-up and shutdown).
"""
