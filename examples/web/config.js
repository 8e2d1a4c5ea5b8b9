// Shared by plain.html and react.jsx: where the broker is and who is signed in.
//
// BROKER_URL: the broker, reachable from the browser; this page's origin
// (e.g. http://localhost:8000) must be in the tenant's cors_origins.
export const BROKER_URL = "http://localhost:8080";
// The tenant (POST /v1/tenants/{tenant}/token); undefined: the default tenant.
export const TENANT = undefined;

// For the example only, the user and the app's session JWT come from the
// page's address (?user=alice&jwt=...). A real app takes both from its own
// login (its auth SDK's getToken(), its session endpoint): never from the URL,
// and never kept in localStorage.
const q = new URLSearchParams(location.search);
export const USER_ID = q.get("user") || "alice";
export async function getSessionJwt() {
  return q.get("jwt");
}
