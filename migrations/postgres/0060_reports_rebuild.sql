-- The `reports` read model gained facts (`transferred`, `viewing`, `viewed`)
-- that rows built before them lack for old events. Emptying its tables and
-- its checkpoint makes its worker rebuild it from the log at the next start
-- (docs/projections.md); the log itself is untouched. The `people` read
-- model needs nothing here: its tables are created at start by the
-- projections' own schema step.
DELETE FROM report_facts;
DELETE FROM report_tickets;
DELETE FROM projection_checkpoints WHERE name = 'reports';
