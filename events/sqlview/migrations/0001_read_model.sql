-- The read model: the event log folded into tables. A cache of the log:
-- deleting the file loses nothing (the service rebuilds it), and every row
-- is derived from events by the rules of events.JobState (events/fold.go).

-- The log this database was built from, and how far it has applied it.
-- One row. last_seq is written in the same transaction as the rows of the
-- messages it covers, so a message is applied exactly once across crashes.
CREATE TABLE progress (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    stream           TEXT    NOT NULL, -- stream name
    stream_created   TEXT    NOT NULL, -- the stream's creation time (RFC 3339): its incarnation
    last_seq         INTEGER NOT NULL, -- last stream sequence applied or skipped
    events_applied   INTEGER NOT NULL, -- events that changed state
    events_duplicate INTEGER NOT NULL, -- events ignored (already settled, after completion)
    messages_bad     INTEGER NOT NULL  -- messages that could not be applied
);

-- The store master as loaded at start (replaced whenever it changes).
-- Visits join it by store_id for store names; each visit also keeps its
-- store's area code (rewritten when the store master changes), so visits
-- by area are one index range.
CREATE TABLE stores (
    store_id   TEXT PRIMARY KEY,
    store_name TEXT NOT NULL,
    area_code  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX stores_by_area ON stores (area_code);

-- One row per job, from its job_submitted (stream sequence = job_id).
CREATE TABLE jobs (
    job_id       INTEGER PRIMARY KEY,
    status       TEXT    NOT NULL,           -- 'ongoing', then 'completed' or 'failed' (job_completed)
    submitted_at INTEGER NOT NULL,           -- Unix milliseconds
    images       INTEGER NOT NULL,
    processed    INTEGER NOT NULL DEFAULT 0, -- images settled as processed
    failed       INTEGER NOT NULL DEFAULT 0, -- images settled as failed
    errors       TEXT                        -- failed jobs: the error list, JSON [{store_id, error}]
);
CREATE INDEX jobs_by_status ON jobs (status, job_id);

-- One row per visit of a job, with its images' counters.
CREATE TABLE visits (
    job_id     INTEGER NOT NULL,
    visit      INTEGER NOT NULL,           -- position in the submission's visits
    store_id   TEXT    NOT NULL,
    area_code  TEXT    NOT NULL,           -- the store's, from stores; '' for a store not in the store master
    visit_time TEXT    NOT NULL,           -- as the client sent it
    visit_ts   INTEGER NOT NULL,           -- visit_time in Unix milliseconds; NO_TIME (-2^63) when it does not parse
    images     INTEGER NOT NULL,
    processed  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, visit)
) WITHOUT ROWID;
-- Every index ends in the primary key (job_id, visit), so "newest first"
-- pages are index range scans.
CREATE INDEX visits_by_store_time ON visits (store_id, visit_ts);
CREATE INDEX visits_by_area_time ON visits (area_code, visit_ts);
CREATE INDEX visits_by_time ON visits (visit_ts);

-- One row per image of a visit; the first outcome recorded for it wins.
CREATE TABLE images (
    job_id    INTEGER NOT NULL,
    visit     INTEGER NOT NULL,
    idx       INTEGER NOT NULL,           -- position in the visit's image_url
    url       TEXT    NOT NULL,
    state     INTEGER NOT NULL DEFAULT 0, -- 0 pending, 1 processed, 2 failed
    width     INTEGER,
    height    INTEGER,
    perimeter INTEGER,
    error     TEXT,                       -- failed: the reason class ("http 404", "unknown store", ...)
    PRIMARY KEY (job_id, visit, idx)
) WITHOUT ROWID;
