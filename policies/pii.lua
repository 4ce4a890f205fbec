-- pii: personal data never leaves the database in the clear.
--   Emails keep only their domain; card numbers keep their last 4 digits;
--   national identity numbers are redacted in every table.
-- Masks apply to columns by their source (RowDescription's table and
-- column), so aliases do not help; where pgmoat cannot mask a value it
-- denies the statement (doc/policies.md lists the paths).
local moat = require "moat"
local P = {}

P.masks = {
	["people.email"] = "email",
	["customers.email"] = "email",
	["payments.card_number"] = "partial",
	["*.ssn"] = "redact",
}

-- A column named like a card number in any table is masked too.
function P.on_columns(s, cols)
	for _, c in ipairs(cols) do
		local name = c.column
		-- (sub first: a plain prefix test, cheaper than a pattern, fails most names)
		if name and name:sub(1, 4) == "card" and name:match("^card_?n[ou]m") then
			c.mask = c.mask or "partial"
		end
	end
end

-- Bulk export of the protected tables is not masked in flight: refuse it.
function P.on_query(s, q)
	if q.kind == "copy" then
		for _, t in ipairs(q.tables) do
			local name = t:match("([^.]+)$")
			if name == "people" or name == "customers" or name == "payments" then
				return moat.deny("COPY of " .. t .. " would bypass masking")
			end
		end
	end
end

return P
