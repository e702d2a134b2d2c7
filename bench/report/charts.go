package report

import (
	"fmt"
	"image/color"
	"os"

	"github.com/flashsale/flashsale/bench/loadgen"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

// percentiles plotted on the latency curve; x is 1/(1-p), on a log scale,
// so the tail gets the room it deserves.
var percentiles = []float64{0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999}

// LatencyChart writes the latency percentile curve of every run.
func LatencyChart(path string, runs []Run) error {
	p := plot.New()
	p.Title.Text = "Latency by percentile (from intended send time)"
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 1, Label: "0%"}, {Value: 2, Label: "50%"},
		{Value: 10, Label: "90%"}, {Value: 100, Label: "99%"}, {Value: 1000, Label: "99.9%"}, {Value: 10000, Label: "99.99%"},
		{Value: 100000, Label: "99.999%"}})
	p.Add(plotter.NewGrid())
	for i, r := range runs {
		pts := make(plotter.XYs, 0, len(percentiles))
		for _, q := range percentiles {
			pts = append(pts, plotter.XY{X: 1 / (1 - q/100), Y: msf(r.Result.Quantile(q))})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = palette[i%len(palette)]
		line.Width = vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(r.Name, line)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.X.Max = 3e5 // room for the last tick's label
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// TimelineChart writes throughput (top) and P99 (bottom) per second.
func TimelineChart(path string, runs []Run) error {
	tput, p99 := plot.New(), plot.New()
	tput.Title.Text = "Throughput and P99 per second (full seconds of the run)"
	tput.Y.Label.Text = "answers / s"
	p99.Y.Label.Text = "P99 (ms)"
	p99.X.Label.Text = "second of the run"
	tput.Add(plotter.NewGrid())
	p99.Add(plotter.NewGrid())
	for i, r := range runs {
		var a, b plotter.XYs
		for _, s := range fullSeconds(r.Result.Timeline) {
			a = append(a, plotter.XY{X: float64(s.Sec), Y: float64(s.Requests)})
			b = append(b, plotter.XY{X: float64(s.Sec), Y: msf(s.P99)})
		}
		if len(a) == 0 {
			continue
		}
		for j, pts := range []plotter.XYs{a, b} {
			line, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			line.Color = palette[i%len(palette)]
			line.Width = vg.Points(1.5)
			if j == 0 {
				tput.Add(line)
				tput.Legend.Add(r.Name, line)
			} else {
				p99.Add(line)
			}
		}
	}
	tput.Legend.Top = true
	const w, h = 8 * vg.Inch, 7 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	plots := [][]*plot.Plot{{tput}, {p99}}
	canvases := plot.Align(plots, draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Points(8)}, dc)
	tput.Draw(canvases[0][0])
	p99.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return f.Close()
}

// fullSeconds drops the seconds cut by the warm-up or the end of the run,
// whose counts are not rates; a run shorter than a full second keeps all.
func fullSeconds(tl []loadgen.Second) []loadgen.Second {
	var full []loadgen.Second
	for _, s := range tl {
		if !s.Partial {
			full = append(full, s)
		}
	}
	if len(full) == 0 {
		return tl
	}
	return full
}
