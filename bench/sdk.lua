-- wrk script: a Messages request with the headers the Python SDK sends
-- (bench/post.lua sends three of them): for the request side's cost per
-- header (bench/pair.sh: SCRIPT=bench/sdk.lua).
wrk.method = "POST"
wrk.body = '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "placeholder"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["Accept"] = "application/json"
wrk.headers["Accept-Encoding"] = "gzip, deflate"
wrk.headers["User-Agent"] = "Anthropic/Python 0.75.0"
wrk.headers["X-Stainless-Lang"] = "python"
wrk.headers["X-Stainless-Package-Version"] = "0.75.0"
wrk.headers["X-Stainless-OS"] = "Linux"
wrk.headers["X-Stainless-Arch"] = "x64"
wrk.headers["X-Stainless-Runtime"] = "CPython"
wrk.headers["X-Stainless-Runtime-Version"] = "3.12.7"
wrk.headers["X-Stainless-Retry-Count"] = "0"
wrk.headers["X-Stainless-Timeout"] = "600"
