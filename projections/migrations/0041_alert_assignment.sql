-- Alerts can be assigned to an operator (AssignAlert -> AlertAssigned); the console's
-- queue and the API show who holds each alert.
ALTER TABLE alerts ADD COLUMN assigned_to text;
