// /docs: swagger-ui renders this service's /openapi.yaml. An external file, not an inline script: the
// Content-Security-Policy (script-src 'self') runs nothing inline. Everything is loaded from this origin.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  // eslint-disable-next-line no-undef
  window.ui = SwaggerUIBundle({
    url: "/openapi.yaml",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    validatorUrl: null, // the default asks an online validator: nothing leaves this origin
    tryItOutEnabled: false,
    defaultModelsExpandDepth: 0,
    syntaxHighlight: { activated: false }, // highlighted blocks come with inline styles, refused by the CSP
    // "Try it out" calls this worker, whatever server openapi.yaml names (connect-src 'self').
    requestInterceptor: (request) => {
      const url = new URL(request.url, window.location.href);
      request.url = `${window.location.origin}${url.pathname}${url.search}`;
      return request;
    },
  });
});
