// The reports' chart (ECharts, vendored) and print button. The figures come as a JSON
// block the page carries (amounts as strings); a chart is drawing only, never a figure
// the user reads off: the table under it has every number.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
  var box = document.getElementById("report-chart");
  var data = document.getElementById("report-chart-data");
  if (!box || !data || !window.echarts) return;
  var spec = JSON.parse(data.textContent);
  var chart = window.echarts.init(box, null, { renderer: "svg" });
  var series;
  if (spec.kind === "pie") {
    series = [{
      type: "pie", radius: "60%", name: spec.series[0].name,
      data: spec.categories.map(function (c, i) { return { name: c, value: Number(spec.series[0].values[i]) }; })
    }];
    chart.setOption({ tooltip: { trigger: "item" }, legend: { bottom: 0 }, series: series, animation: false });
  } else {
    series = spec.series.map(function (s) {
      return { type: spec.kind, name: s.name, data: s.values.map(Number), barMaxWidth: 60 };
    });
    chart.setOption({
      tooltip: { trigger: "axis" }, legend: { top: 0 }, grid: { left: 60, right: 20, bottom: 60 },
      xAxis: { type: "category", data: spec.categories, axisLabel: { rotate: spec.categories.length > 8 ? 30 : 0 } },
      yAxis: { type: "value" }, series: series, animation: false
    });
  }
  window.addEventListener("resize", function () { chart.resize(); });
  window.addEventListener("beforeprint", function () { chart.resize(); });
});
