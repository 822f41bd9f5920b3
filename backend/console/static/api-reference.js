// The API reference at /api/v1/docs: Swagger UI (npm swagger-ui-dist, pinned) on the
// backend's own OpenAPI document. "Authorize" takes an API token; "Try it out" calls
// the API from this page. The token is kept only while the page is open.
window.addEventListener("load", function () {
  "use strict";
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    displayRequestDuration: true,
    // Nothing from elsewhere: no validator badge fetched from swagger.io.
    validatorUrl: null,
  });
});
