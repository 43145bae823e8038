-- wrk script: a Messages request as an SDK sends it, with a placeholder key
-- that the proxy under test replaces.
wrk.method = "POST"
wrk.body = '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "placeholder"
wrk.headers["anthropic-version"] = "2023-06-01"
