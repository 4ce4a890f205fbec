-- readonly: identities whose token says they are readers may only read.
--   A reader is a session with s.role == "reader" (the server role chosen by
--   the JWT role claim) or a "db_role" claim of "reader".
--   Reads are statements that do not write (q.writes covers writes hidden in
--   writable CTEs, EXPLAIN ANALYZE, SELECT INTO) plus transaction control and
--   a few harmless utility statements. Functions can write too: a reader may
--   only call functions from a short allow-list.
local moat = require "moat"
local P = {}

local read_kinds = {
	select = true, explain = true, show = true, begin = true, commit = true,
	rollback = true, savepoint = true, release = true, set = false,
}

local safe_functions = {
	count = true, sum = true, min = true, max = true, avg = true, now = true,
	lower = true, upper = true, coalesce = true, length = true,
	["pg_catalog.now"] = true, ["pg_catalog.count"] = true,
}

local function is_reader(s)
	if s.role == "reader" then return true end
	return s.claims ~= nil and s.claims.db_role == "reader"
end

function P.on_query(s, q)
	if not is_reader(s) then return end
	if q.writes or not read_kinds[q.kind] then
		return moat.deny("read-only identity: " .. q.kind .. " is not allowed")
	end
	for _, f in ipairs(q.functions or {}) do
		if not safe_functions[f] then
			return moat.deny("read-only identity: function " .. f .. " is not allowed")
		end
	end
end

return P
