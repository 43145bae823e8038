// Package anthropictest is a faithful fake of the Claude API and of the
// Admin API's key endpoints, served over real loopback HTTP, for
// keywarden's rotation, sidecar and end-to-end tests and for load runs.
//
// Start one per test with [Start] (or [New] then [Server.Start]); a load
// run serves [Server.Handler] from its own listener. The official Go SDK
// (github.com/anthropics/anthropic-sdk-go) works against it unchanged with
// option.WithBaseURL(s.URL()).
//
// # What it fakes, as documented
//
//   - POST /v1/messages: the Message JSON, or with "stream": true an SSE
//     stream in the documented order (message_start, content_block_start,
//     ping, content_block_delta…, content_block_stop, message_delta,
//     message_stop), each event flushed as it is written; the number of
//     deltas and a delay between events are set with [WithStream] or
//     [Server.SetStream], and [Server.FailStreams] ends streams with an
//     `event: error` frame after the 200. The usage object is the API's:
//     input_tokens (a fixed estimate), output_tokens (8, or the number of
//     deltas, cumulative in message_delta), and cache tokens set per server
//     or per model with [WithCacheUsage] or [Server.SetCacheUsage]:
//     cache_creation_input_tokens, cache_read_input_tokens and the
//     cache_creation {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}
//     object in the JSON and message_start, the cumulative counts again in
//     message_delta. Without a setting the cache counts are 0 and there is
//     no cache_creation object.
//   - The anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-
//     {limit,remaining,reset} headers on Messages answers, with
//     [WithRateLimits] or [Server.SetRateLimits]: remaining counts down by
//     each answer's request and tokens within a window, reset is the
//     window's end (RFC 3339).
//   - POST /v1/messages/count_tokens, GET /v1/models (paginated) and
//     GET /v1/models/{id}, with the model ids of the SDK's constants.
//   - The Admin API: GET /v1/organizations/api_keys (limit 1–1000, default
//     20; after_id, before_id, status, workspace_id, created_by_user_id;
//     data, has_more, first_id, last_id), GET and POST
//     /v1/organizations/api_keys/{id} (name and/or status active, inactive
//     or archived; archived is final), with the admin key
//     ([Server.AdminKey], sk-ant-admin01-…).
//   - Authentication with x-api-key: a missing, unknown, inactive,
//     archived or expired key answers 401 authentication_error; a key
//     activated through the Admin API or [Server.SetStatus] can take
//     [WithActivationDelay] to start working ("new keys can take seconds to
//     work"); keys expire at [Server.ExpireAt].
//   - anthropic-version (missing: 400 "anthropic-version: header is
//     required"; unknown: 400 "… is not a valid version"), content-type
//     application/json on POST bodies, the 32 MB request limit (413).
//   - A request carrying an Origin header, as browsers send, answers 401
//     "CORS requests must set 'anthropic-dangerous-direct-browser-access'
//     header" unless it sets that header to true (then it is served with
//     access-control-allow-origin: *) or [WithOriginAllowed] is given.
//   - Every answer carries a request-id header; errors are
//     {"type":"error","error":{"type":…,"message":…},"request_id":…} with
//     the documented status codes; 429 carries retry-after and the
//     anthropic-ratelimit-requests-* headers.
//
// # Test controls
//
// Keys: [Server.AddKey] (realistic sk-ant-api03-… values, apikey_01… ids,
// partial_key_hint of the first 16 and last 4 characters, as in
// "sk-ant-api03-R2D...igAA"), [Server.SetStatus], [Server.Expire],
// [Server.ExpireAt], [Server.Key], [Server.KeyByValue], [Server.Keys];
// [Server.Leaked] finds key values in logs and errors.
// Time: [WithClock] makes activation delays, expiry and rate-limit
// windows deterministic.
// Faults: [Server.SetLatency], [Server.FailNext] (429, 500, 529 or any
// documented status for the next n requests, optionally for one path),
// [Server.FailStreams]. Recording: [Server.Stats] (requests per status,
// and per key id: served, rejected, failed), [Server.Log] (a bounded log of
// the last requests, [WithLog]), [Server.Reset]. All of it is safe for
// concurrent use while the server serves.
//
// # What it does not fake
//
// Model output (the text is fixed), token counting beyond a fixed
// estimate, tools, thinking and every request field it does not validate
// (model, max_tokens, messages, stream), message batches, files, the
// beta endpoints, workspaces beyond a workspace_id on each key, rate
// limiting of its own (429s are injected), OAuth and Workload Identity
// Federation tokens, and the Console's key creation: no endpoint creates
// a key, as in the real API; tests add them with [Server.AddKey].
//
// Two answers are the fake's choice where the documentation is silent: an
// admin key on the data plane answers 401 authentication_error "invalid
// x-api-key" (it is no API key), and a valid API key on the Admin API
// answers 403 permission_error.
package anthropictest
