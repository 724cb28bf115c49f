// keygate's start-up of Swagger UI at /docs (see src/explorer.rs): the stock one, without the
// online validator, and with the request interceptor that makes the cookie credential place work
// in "Try it out".
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "StandaloneLayout",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    // Swagger UI's default sends the document's URL to validator.swagger.io for a badge,
    // from any host but localhost: nothing leaves for elsewhere.
    validatorUrl: null,
    // A page may not set a request's Cookie header, so the credential authorized for the
    // `api_access_token` cookie is set as a cookie of this origin for the request instead, and
    // removed again before any request that does not carry it.
    requestInterceptor: function (request) {
      var header = request.headers && request.headers.Cookie;
      var token = header && /(?:^|;\s*)api_access_token=([^;]*)/.exec(header);
      document.cookie = token
        ? "api_access_token=" + token[1] + "; Path=/v1; SameSite=Strict"
        : "api_access_token=; Path=/v1; Max-Age=0; SameSite=Strict";
      return request;
    },
  });
};
