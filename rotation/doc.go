// Package rotation rotates keys without downtime, as a crash-safe state
// machine whose progress lives in the key's store: create → probe → promote
// → grace → revoke.
//
//  1. create: an Issuer makes a new key (idempotent on the rotation token),
//     written as PENDING with driver.Stager.PutPending under that token.
//  2. probe: the new key is activated (Activator) and verified by a Probe,
//     with retries and backoff honouring retry-after (refusals only while
//     a just-activated key settles, Retry.Settle). A failure leaves
//     CURRENT untouched and parks the key (kept PENDING, probed again by the
//     next run) or discards it (revoked at the issuer, PENDING removed).
//  3. promote: PENDING becomes CURRENT by compare-and-swap; the old CURRENT
//     becomes PREVIOUS, which consumers keep as a fallback.
//  4. grace: the old key stays valid until every consumer has re-read the
//     store (at least their refresh interval plus jitter). A run that finds
//     the grace not over exits 0 and says when the revocation is due, or
//     waits (RunOptions.Wait).
//  5. revoke: the Issuer revokes the old key, after checking it is not
//     CURRENT, and the record marks the rotation complete.
//
// # The rotation record
//
// Each key's store keeps a small record (driver.Record, compare-and-swap on
// its revision): the phase, the rotation token, the lease (holder and
// expiry), the new and old versions with their key ids and fingerprints,
// when the new key was promoted and when the old one is due for revocation,
// and the last outcome. The record is written before each step's side
// effect, so a run killed at any boundary is resumed by the next run
// (Options.AfterStep lets tests stop a run at every Boundary). Two rotators
// started at once race on the record's compare-and-swap: exactly one starts
// the rotation, the other fails with ErrInProgress (exit 11). A live run
// renews its lease in the background every Options.Lease/3; a crashed
// holder's lease runs out within Options.Lease (default 45s) and another
// rotator takes over, or RunOptions.BreakLease frees it at once. The record
// also keeps issuer key ids attached to stored keys (Rotator.SetKeyID).
//
// What the next run does, by what the store holds:
//
//	record phase   store                           next action
//	-------------  ------------------------------  ------------------------------------------------
//	idle           no PENDING                      nothing unless due (schedule or Force); then
//	                                               write creating+token+lease, and go on
//	idle           a PENDING (stray, e.g. a put)   stop, exit 11; --abandon discards it
//	creating       no PENDING with the token       Issuer.Create(token), PutPending(token); a key
//	                                               consumers cannot read: record discarding (no
//	                                               pending_version), revoke it, record idle; a
//	                                               version id shaped like a key: the same, the
//	                                               version discarded after the revoke
//	creating       PENDING with the token          use it (no second Create); record probing; its
//	                                               id shaped like a key: as just above
//	probing        PENDING = pending_version       Activate, Probe; pass: record promoting
//	                                               (old = CURRENT); fail: park or discard
//	parked         PENDING = pending_version       probe again (--abandon discards it)
//	discarding     PENDING = pending_version/none  Revoke the new key, DiscardPending, record idle
//	discarding     no pending_version (refused)    Issuer.Create(token) again, Revoke it, discard
//	                                               a PENDING with the token (its id shaped like a
//	                                               key, never recorded), record idle
//	discarding     no pending_version nor new_fp   a Releaser gives the token's key back; others:
//	               (abandoned in creating)         Issuer.Create(token) again, Revoke it; record idle
//	promoting      CURRENT = old_version           Promote(pending, old); record grace
//	promoting      CURRENT = pending_version       (promoted before a crash) record grace
//	grace          CURRENT = new, PREVIOUS = old   before revoke_due: exit 0 (or wait);
//	                                               after: record revoking (with a RevokeGate:
//	                                               once Checks clear checks in a row)
//	revoking       CURRENT ≠ old                   Issuer.Revoke(old); record idle (revoked); with
//	                                               no value or id of old: idle (not_revoked, warned);
//	                                               --abandon: idle (not_revoked by hand, warned)
//	revoking       CURRENT = old (a rollback)      revoke nothing; record idle (rolled_back, warned)
//	any with lease held by another, unexpired      stop, exit 11 (in progress)
//
// Whichever way a rotation ends, the issuer forgets the key it stored
// (Committer: a pool's claim), even when the run that stored it died
// before telling it.
//
// # The revoke gate
//
// A Key's RevokeGate holds the revocation after the grace until its
// Consumers (rotation/promgate: Prometheus' keywarden_key_info) report no
// holder of the old key, and some holder of the new one, Checks times in a
// row, Interval apart. Each check is recorded (gate_since, gate_last,
// gate_zeros, gate_holders), so a killed run's successor keeps the count.
// A run that meets holders ends (OutcomeGate, exit 0) unless RunOptions.Wait;
// past MaxWait, GateHold fails the run with KindGateHeld (exit 15,
// EventGateHeld) and GateRevoke revokes anyway (EventGateForced).
//
// # Exit codes
//
// Run returns an *Error whose Kind maps to the exit code of `keywarden
// rotate` (ExitCode):
//
//	0   rotated, revoked, nothing due, or waiting for the grace to end
//	1   other failures (interrupted, unexpected)
//	2   configuration error
//	10  the new key failed its probe (CURRENT untouched; parked or discarded)
//	11  conflict: a rotation is in progress elsewhere, or the store changed
//	12  store error
//	13  issuer error (Admin API, exec command)
//	14  the issuer's key pool is empty
//	15  the revoke gate held the old key past its max_wait (policy hold)
//
// # Issuers and probes
//
// Issuers live in subpackages: anthropic (a pool of Console-created keys,
// activated and deactivated through the Admin API), exec (a command) and
// random (internal shared secrets). Probes: anthropic (GET /v1/models, and
// optionally count_tokens for a model) and httpprobe.
//
// Key values never appear in logs, errors, events or metrics: only version
// ids, key ids and fingerprints. A version whose id the store gives shaped
// like a key (providers.KeyShaped) is refused where it is read, and its
// id never quoted (a new rotation checks CURRENT and PENDING before it
// writes anything); a new version's, known only once written, is
// discarded at once.
package rotation
