// Who is signed in and what they may do. Action controls are only built for admin keys.

let current = { name: null, scopes: [] };

export function setIdentity(me) {
  const scopes = Array.isArray(me?.scopes) ? me.scopes.map(String) : [];
  current = { name: me?.name ?? me?.key_name ?? me?.id ?? null, scopes };
}

export function identity() {
  return current;
}

export function hasScope(scope) {
  return current.scopes.includes(scope);
}

export function canAdmin() {
  return hasScope("admin");
}
