// Login: the pasted token is sent once, in the Authorization header; the answer sets the
// HttpOnly session cookie, and the page goes where the user was headed.
import { flash } from "./api.js";

const form = document.getElementById("login");
form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value.trim();
  const response = await fetch("/api/v1/session", {
    method: "POST", credentials: "same-origin", headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    flash((await response.json()).message);
    return;
  }
  location.assign(form.dataset.next || "/");
});
