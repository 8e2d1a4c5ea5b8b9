// The React page: @trycourier/courier-react's <CourierInbox>, signed in and
// kept signed in through the broker's helper. Built by `npm run build`
// (esbuild) into dist/react.js, which react.html loads.
import { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { CourierInbox, useCourier } from "@trycourier/courier-react";
import { BROKER_URL, TENANT, USER_ID, getSessionJwt } from "./config.js";

function useBrokerSession({ userId }) {
  const courier = useCourier();
  const [state, setState] = useState({ status: "signing in" });

  useEffect(() => {
    let session = null;
    let gone = false;
    // The helper is served by the broker: imported at run time, not bundled.
    import(/* webpackIgnore: true */ `${BROKER_URL}/v1/client.js`).then(({ createTokenSession }) => {
      if (gone) return;
      session = createTokenSession({
        url: BROKER_URL,
        tenant: TENANT,
        body: { user_id: userId },
        getCredential: getSessionJwt,
        onToken: ({ token, userId: uid, expiresIn }) => {
          courier.shared.signIn({ userId: uid, jwt: token });
          setState({ status: "signed in", expiresIn });
        },
        onError: (err) => {
          if (!err.retryable) setState({ status: "signed out", error: err.message });
        },
      });
      session.start().catch(() => {});
    });
    // Unmount or another user (logout): stop refreshing, forget the token.
    return () => {
      gone = true;
      if (session) session.stop();
      courier.shared.signOut();
    };
  }, [userId]);
  return state;
}

function App() {
  const { status, error } = useBrokerSession({ userId: USER_ID });
  return (
    <main style={{ font: "15px system-ui, sans-serif", margin: "2rem" }}>
      <h1>Inbox</h1>
      <p id="status">{error ? `${status}: ${error}` : status}</p>
      <CourierInbox />
    </main>
  );
}

createRoot(document.getElementById("root")).render(<App />);
