// A point's consumption chart (ECharts, vendored): bars of what was used per period and a
// line of the last register read in it, from the JSON block the page carries (figures as
// strings). Drawing only: the table under it has every figure.
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("point-chart");
  var data = document.getElementById("point-chart-data");
  if (!box || !data || !window.echarts) return;
  var spec = JSON.parse(data.textContent);
  var chart = window.echarts.init(box, null, { renderer: "svg" });
  function nums(values) { return values.map(function (v) { return v === null ? null : Number(v); }); }
  chart.setOption({
    animation: false,
    tooltip: { trigger: "axis" },
    legend: { top: 0 },
    grid: { left: 60, right: 70, bottom: 50 },
    xAxis: { type: "category", data: spec.categories, axisLabel: { rotate: spec.categories.length > 12 ? 30 : 0 } },
    yAxis: [{ type: "value", name: spec.used.name }, { type: "value", name: spec.register.name, scale: true }],
    series: [
      { type: "bar", name: spec.used.name, data: nums(spec.used.values), barMaxWidth: 40 },
      { type: "line", name: spec.register.name, yAxisIndex: 1, connectNulls: true, data: nums(spec.register.values) }
    ]
  });
  window.addEventListener("resize", function () { chart.resize(); });
});
