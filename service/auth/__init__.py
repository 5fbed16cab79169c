"""Authentication and ownership: API tokens, their scopes, and who a request acts for.

- `tokens`: making a token's secret and its hash, scopes and what each may do;
- `guard`: from an `Authorization` header to a `Caller` (401/403), the `GRADWATCH_AUTH`
  start-up check, and the responses every protected route declares in OpenAPI;
- `token_file`: the local token `gradwatch up` writes and the CLI and client read;
- `cli`: `gradwatch token create|list|revoke`, straight against the database.

Ownership itself is enforced in the store's queries (`owner=` on every lookup).
"""
