-- guardrails: destructive statements need a human.
--   DROP and TRUNCATE are held for approval (SHOW APPROVALS / APPROVE id).
--   DELETE and UPDATE without a WHERE clause are denied, including ones
--   hidden in a writable CTE, EXPLAIN ANALYZE or PREPARE (q.dml_without_where).
local moat = require "moat"
local P = {}

function P.on_query(s, q)
	local kind = q.kind
	if kind == "drop" or kind == "truncate" then
		return moat.hold(kind .. " needs approval")
	end
	if ((kind == "delete" or kind == "update") and not q.has_where) or q.dml_without_where then
		return moat.deny(kind .. " without WHERE is not allowed")
	end
end

return P
