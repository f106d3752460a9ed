-- Undo 0002: the bodies can be built from the rows again.
ALTER TABLE orders DROP COLUMN IF EXISTS body;
