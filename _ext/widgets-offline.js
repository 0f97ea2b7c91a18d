// Loaded before require.js and the widget manager on every page that holds widgets (see
// nb_ipywidgets_js in _config.yml; _ext/offline_assets.py copies it to _build/html/vendor/).
(function () {
  "use strict";
  var vendor = document.currentScript.src.replace(/[^/]*$/, ""); // .../vendor/
  // The widget manager finds its icon fonts next to the URL require.js gives its modules: point
  // require.js (a global `require` object before require.js loads is its configuration) at
  // the manager's folder, not at the page's folder.
  // The manager asks require.js for every other widget module before it tries a CDN: the
  // attention views' module, anywidget, is one of the site's own files.
  window.require = {
    paths: {
      "@jupyter-widgets/html-manager/dist": vendor + "html-manager",
      anywidget: vendor + "anywidget/index",
    },
  };
  window.__jupyter_widgets_assets_path__ = vendor + "html-manager/";
  // ipywidgets typesets a label or HTML widget with MathJax 2's MathJax.Hub.Queue whenever
  // window.MathJax exists; the site runs MathJax 3, which has typesetPromise instead. MathJax is
  // loaded with `defer`, so it is there when DOMContentLoaded fires, before the widgets render.
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (!mj || mj.Hub || typeof mj.typesetPromise !== "function") return;
    mj.Hub = {
      Queue: function (command) {
        var element = command && command[2];
        mj.startup.promise.then(function () {
          return mj.typesetPromise(element ? [element] : undefined);
        });
      },
    };
  });
})();
