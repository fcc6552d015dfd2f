-- 0005: when a waiting job is expected to start, if running jobs end at their time limits (`allot jobs show`).
ALTER TABLE jobs ADD COLUMN estimated_start timestamptz;
