package simulators

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"citywatch/event"
)

// Vehicle is one simulated vehicle.
type Vehicle struct {
	Plate string
	Color string // plate colour: blue, green, yellow, white, black
	Type  string // car, suv, van, truck, bus, motorcycle
	Paint string // body colour
	// node is the road node the vehicle is parked at (-1 while driving),
	// free when it may start a trip.
	node int
	free time.Time
	slot int // index in its node's parked list
}

// Person is one simulated resident.
type Person struct {
	ID    string // resident identity number with a right check digit
	Name  string
	Plate string // the vehicle the person drives, if any
	// Bulk buyers (farm machinery, generators) hold a registration and
	// buy in cans at most once a day.
	Permit   string
	lastBulk time.Time
}

// plateKey folds the look-alike characters of CONTRACT.md section 6
// (0/D/Q, 8/B, 2/Z, 1/I, 5/S) so that plates a hotlist's OCR tolerance
// could confuse compare equal.
func plateKey(p string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case 'D', 'Q':
			return '0'
		case 'B':
			return '8'
		case 'Z':
			return '2'
		case 'I':
			return '1'
		case 'S':
			return '5'
		}
		return r
	}, p)
}

const (
	plateLetterSet = "ABCDEFGHJKLMNPQRSTUVWXYZ"
	plateSerialSet = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
	digitSet       = "0123456789"
)

var (
	// Hubei's other cities and the neighbouring provinces, by how often
	// their vehicles come to Xiangyang.
	hubeiLetters  = []string{"A", "E", "H", "C", "S", "L", "K", "M"} // 武汉 宜昌 荆门 十堰 随州 (…)
	provinces     = []string{"豫", "陕", "渝", "湘", "川", "京", "粤", "浙", "皖", "苏"}
	provinceShare = []float64{0.35, 0.15, 0.1, 0.08, 0.07, 0.05, 0.06, 0.05, 0.05, 0.04}
	paints        = []string{"白", "黑", "银", "灰", "红", "蓝"}
	paintShare    = []float64{0.35, 0.22, 0.18, 0.12, 0.07, 0.06}
)

func pickShare(rng *rand.Rand, shares []float64) int {
	x := rng.Float64()
	for i, s := range shares {
		if x < s {
			return i
		}
		x -= s
	}
	return len(shares) - 1
}

// NewVehicle returns a random vehicle with a plate of the real
// distribution: about 75 % 鄂F (Xiangyang), 13 % other Hubei cities, the
// rest other provinces (Henan first); a fifth of cars are new-energy with
// 8-character green plates (D or F, then 5 digits); trucks and buses carry
// yellow plates; a few police (警, white) plates.
func NewVehicle(rng *rand.Rand) Vehicle {
	v := Vehicle{node: -1}
	switch x := rng.Float64(); {
	case x < 0.68:
		v.Type = "car"
	case x < 0.83:
		v.Type = "suv"
	case x < 0.88:
		v.Type = "van"
	case x < 0.95:
		v.Type = "truck"
	case x < 0.97:
		v.Type = "bus"
	default:
		v.Type = "motorcycle"
	}
	v.Paint = paints[pickShare(rng, paintShare)]
	var b strings.Builder
	switch x := rng.Float64(); {
	case x < 0.75:
		b.WriteString("鄂F")
	case x < 0.88:
		b.WriteString("鄂")
		b.WriteString(hubeiLetters[rng.IntN(len(hubeiLetters))])
	default:
		b.WriteString(provinces[pickShare(rng, provinceShare)])
		b.WriteByte(plateLetterSet[rng.IntN(len(plateLetterSet))])
	}
	switch {
	case v.Type == "truck" || v.Type == "bus":
		v.Color = "yellow"
		serial(rng, &b, 5)
	case (v.Type == "car" || v.Type == "suv") && rng.Float64() < 0.2:
		v.Color = "green"
		b.WriteByte("DF"[rng.IntN(2)])
		for range 5 {
			b.WriteByte(digitSet[rng.IntN(10)])
		}
	case v.Type != "motorcycle" && rng.Float64() < 0.004:
		v.Color = "white"
		serial(rng, &b, 4)
		b.WriteString("警")
	default:
		v.Color = "blue"
		serial(rng, &b, 5)
	}
	v.Plate = b.String()
	return v
}

// serial writes n serial characters: digits mostly, at most two letters, as
// issued plates have.
func serial(rng *rand.Rand, b *strings.Builder, n int) {
	letters := 0
	for range n {
		if letters < 2 && rng.Float64() < 0.25 {
			b.WriteByte(plateLetterSet[rng.IntN(len(plateLetterSet))])
			letters++
			continue
		}
		b.WriteByte(digitSet[rng.IntN(10)])
	}
}

var (
	surnameList = []string{"王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹"}
	givenList   = []string{"伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "霞", "平", "刚", "桂英", "建华", "志强", "海燕", "文", "华", "红", "玉兰", "春梅"}
	// Xiangyang's county-level codes carry most residents; the rest are
	// from elsewhere in Hubei and Henan.
	localCodes = []string{"420602", "420606", "420607", "420624", "420625", "420626", "420682", "420683", "420684"}
	otherCodes = []string{"420102", "420106", "420502", "420802", "420303", "421303", "411302", "411381", "410102"}
)

// NewPerson returns a random adult resident with a valid identity number
// (GB 11643: area code, birth date, sequence, ISO 7064 MOD 11-2 check).
func NewPerson(rng *rand.Rand) Person {
	code := localCodes[rng.IntN(len(localCodes))]
	if rng.Float64() < 0.15 {
		code = otherCodes[rng.IntN(len(otherCodes))]
	}
	birth := time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, rng.IntN(365*55))
	first := fmt.Sprintf("%s%s%03d", code, birth.Format("20060102"), rng.IntN(1000))
	p := Person{ID: first + string(event.IDCheckDigit(first))}
	p.Name = surnameList[rng.IntN(len(surnameList))] + givenList[rng.IntN(len(givenList))]
	return p
}
