// Package cassandra is the cluster-mode store.Store (gocql v1.7.0). The
// schema, also of the cluster directory's tables (pkg/directory/cassandra,
// which connects through Connect), is created by Migrate (`msync migrate -c
// FILE`); see Schema.
//
// Ids. Oplogs live in partitions (channel, bucket), bucket = id/BucketSize,
// each with a STATIC max_id. An append is one single-partition conditional
// LOGGED batch: UPDATE max_id = cur+n IF max_id = cur (IF max_id = null for a
// bucket's first ids) plus the INSERTs of rows cur+1..cur+n. Paxos on the
// partition commits n+1 only after n, so the committed max_id is the durable
// watermark and readers (id > ? AND id <= max LIMIT n, bucket by bucket)
// never see a hole. A group that would cross a bucket boundary is split, one
// LWT per bucket. Appends of one channel are serialised in-process (a caller
// leads and commits waiting callers' ops with its own, MaxBatch at most per
// LWT); other processes' appends show up as lost CAS rounds, retried with the
// max_id the server returned after a short random pause (without it, a
// process committing back to back starved the other: 64 lost rounds in a
// row). The head an append starts from is the one this process cached when
// its last commit on the channel saw no other writer (no lost round, a head
// read that found the head where it was left); otherwise it is read first.
// Either way the condition checks it, so a stale head costs a lost round,
// never an id. No RetryPolicy is set anywhere.
//
// Unknown outcomes. Any error from an LWT batch (a CAS write timeout, a lost
// connection, a cancelled context) is settled by a SERIAL read of the
// partition — which completes or forever invalidates an in-flight proposal —
// and matching the op uuid stored in row cur+1; never by allocating again.
// If that read fails too, Append returns ErrUnknownOutcome and forgets its
// cached head.
//
// Deviations from store.go (documented, not hidden): a call spanning several
// channels or buckets is several LWTs (the channels' run concurrently, at
// most 16 at a time), so on error the parts committed stay visible
// (retrying with dedup keys returns their ids).
//
// Dedup keys: table dedup keyed by (channel, dedup_key), claimed with INSERT
// ... IF NOT EXISTS (op uuid, from_id = a lower bound of the id, claimed_at)
// before the append; the id is written after the append commits. Crash
// windows: (1) after the claim, before the append: the claim has no id; a
// later op with the key scans ids > from_id for the claim's uuid after a
// SERIAL head read, finds nothing, and takes the claim over (LWT IF op_uuid =
// old) once DedupLease has passed — until then it waits (bounded by its ctx).
// This assumes the claimer cannot still commit after the lease (its commit is
// bounded by timeouts well below the lease) and bounded clock skew. (2) after
// the append, before the id is written: the scan finds the uuid and returns
// that id as the duplicate. (3) an append that failed definitely releases its
// claims (DELETE IF op_uuid = ours). Residual risk: an oplog whose TTL ended
// before resolution cannot be found by uuid, so the key may be appended again.
//
// Sync points are written USING TIMESTAMP = id: last-write-wins keeps the
// highest id with one plain write (no read, no LWT); nothing may write that
// table with wall-clock timestamps. Oplogs expire by native TTL (from
// ValidUntilMs, at least 1s, at most 20 years); max_id has none, so ids are
// never reused; DeleteExpired returns 0.
//
// Principals (logic's DeviceOwners and TokenRevocations, so cluster mode
// supports auth.device_binding: owner and token revocation): device_owners is
// written only by LWT, INSERT ... IF NOT EXISTS for the first claim and
// UPDATE ... IF user_id = seen for a vouched hand-over, so two logic
// processes can never both record their user; the owner reconnecting costs
// one read. token_cutoffs is written USING TIMESTAMP = the cut-off, so
// last-write-wins keeps the latest one without a read or an LWT.
//
// Cost: an append is one LWT (~4 round trips) per group per bucket, plus a
// LOCAL_QUORUM read of the head when the cached one is not trusted, plus for each
// dedup key one LWT claim and one write.
package cassandra
