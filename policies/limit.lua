-- limit: an agent's unbounded SELECT gets a LIMIT.
--   Sessions whose application_name starts with "agent" or whose token has
--   an "agent" claim of true get at most 1000 rows per plain SELECT. The
--   rewrite wraps the original statement (the parser says it is a SELECT
--   that writes nothing and has no LIMIT of its own); it never edits the
--   SQL text with patterns.
local moat = require "moat"
local P = {}

local MAX_ROWS = 1000

local function is_agent(s)
	if s.application_name and s.application_name:sub(1, 5) == "agent" then return true end
	return s.claims ~= nil and s.claims.agent == true
end

function P.on_query(s, q)
	if not is_agent(s) then return end
	if q.kind ~= "select" or q.writes or q.has_limit then return end
	-- newlines keep a trailing -- comment in the original from eating the suffix
	return moat.rewrite("SELECT * FROM (\n" .. q.sql .. "\n) AS pgmoat_limited LIMIT " .. MAX_ROWS)
end

return P
