-- 0004: borrowing and reclaim. An attempt placed beyond its organisation's guarantee borrows lent capacity and
-- is preemptible; a reclaim records when an organisation asked for its guarantee back and when it got it.
ALTER TABLE attempts ADD COLUMN borrowed boolean NOT NULL DEFAULT false;

CREATE TABLE reclaims (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    org text NOT NULL,
    pool text NOT NULL,
    victims bigint[] NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    -- When the owner's job was placed: satisfied_at - requested_at is the reclaim time the deadline bounds.
    satisfied_at timestamptz
);
CREATE INDEX reclaims_open ON reclaims (job_id) WHERE satisfied_at IS NULL;
