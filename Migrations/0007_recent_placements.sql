-- The fragmentation-aware strategy learns the job shapes to expect from the attempts placed recently;
-- this index keeps that look-back cheap however long the attempts table grows.
CREATE INDEX attempts_placed_at ON attempts (placed_at DESC);
