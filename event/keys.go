package event

// keyID names a field of the wire contract; kUnknown is any other key.
type keyID uint8

const (
	kUnknown keyID = iota
	kID
	kType
	kDeviceID
	kTime
	kLat
	kLon
	kCameraClass
	kObject
	kBehavior
	kCount
	kTrackID
	kAltM
	kPlate
	kPlateColor
	kConfidence
	kStatus
	kDetail
	kLane
	kVehicleType
	kVehicleColor
	kSpeedKmh
	kHeadingDeg
	kStationID
	kBuyerID
	kBuyerName
	kFuel
	kContainer
	kVolumeL
	kPermitNo
	kMissionID
	kSpeedMs
	kBatteryPct
	kDispatchID
	// Fields of the normalised form only.
	kPlateValid
	kBuyerPseudonym
	kBuyerIDMasked
	kBuyerNameMasked
	kAttrs
	numKeys
)

var keyNames = [numKeys]string{
	kID:              "id",
	kType:            "type",
	kDeviceID:        "device_id",
	kTime:            "time",
	kLat:             "lat",
	kLon:             "lon",
	kCameraClass:     "camera_class",
	kObject:          "object",
	kBehavior:        "behavior",
	kCount:           "count",
	kTrackID:         "track_id",
	kAltM:            "alt_m",
	kPlate:           "plate",
	kPlateColor:      "plate_color",
	kConfidence:      "confidence",
	kStatus:          "status",
	kDetail:          "detail",
	kLane:            "lane",
	kVehicleType:     "vehicle_type",
	kVehicleColor:    "vehicle_color",
	kSpeedKmh:        "speed_kmh",
	kHeadingDeg:      "heading_deg",
	kStationID:       "station_id",
	kBuyerID:         "buyer_id",
	kBuyerName:       "buyer_name",
	kFuel:            "fuel",
	kContainer:       "container",
	kVolumeL:         "volume_l",
	kPermitNo:        "permit_no",
	kMissionID:       "mission_id",
	kSpeedMs:         "speed_ms",
	kBatteryPct:      "battery_pct",
	kDispatchID:      "dispatch_id",
	kPlateValid:      "plate_valid",
	kBuyerPseudonym:  "buyer_pseudonym",
	kBuyerIDMasked:   "buyer_id_masked",
	kBuyerNameMasked: "buyer_name_masked",
	kAttrs:           "attrs",
}

// lookupKey returns the keyID of a key, or kUnknown.
func lookupKey(name string) keyID {
	switch name {
	case "id":
		return kID
	case "type":
		return kType
	case "device_id":
		return kDeviceID
	case "time":
		return kTime
	case "lat":
		return kLat
	case "lon":
		return kLon
	case "camera_class":
		return kCameraClass
	case "object":
		return kObject
	case "behavior":
		return kBehavior
	case "count":
		return kCount
	case "track_id":
		return kTrackID
	case "alt_m":
		return kAltM
	case "plate":
		return kPlate
	case "plate_color":
		return kPlateColor
	case "confidence":
		return kConfidence
	case "status":
		return kStatus
	case "detail":
		return kDetail
	case "lane":
		return kLane
	case "vehicle_type":
		return kVehicleType
	case "vehicle_color":
		return kVehicleColor
	case "speed_kmh":
		return kSpeedKmh
	case "heading_deg":
		return kHeadingDeg
	case "station_id":
		return kStationID
	case "buyer_id":
		return kBuyerID
	case "buyer_name":
		return kBuyerName
	case "fuel":
		return kFuel
	case "container":
		return kContainer
	case "volume_l":
		return kVolumeL
	case "permit_no":
		return kPermitNo
	case "mission_id":
		return kMissionID
	case "speed_ms":
		return kSpeedMs
	case "battery_pct":
		return kBatteryPct
	case "dispatch_id":
		return kDispatchID
	case "plate_valid":
		return kPlateValid
	case "buyer_pseudonym":
		return kBuyerPseudonym
	case "buyer_id_masked":
		return kBuyerIDMasked
	case "buyer_name_masked":
		return kBuyerNameMasked
	case "attrs":
		return kAttrs
	}
	return kUnknown
}

func keySet(ks ...keyID) uint64 {
	var m uint64
	for _, k := range ks {
		m |= 1 << k
	}
	return m
}

// typeKeys holds, per type, the fields that belong to it in a raw message;
// every other key is kept in Attrs.
var typeKeys = func() [numTypes]uint64 {
	common := keySet(kID, kType, kDeviceID, kTime, kLat, kLon)
	detection := keySet(kObject, kBehavior, kCount, kPlate, kPlateColor, kConfidence, kTrackID)
	var t [numTypes]uint64
	t[TypeCameraDetection] = common | detection | keySet(kCameraClass)
	t[TypeDroneDetection] = common | detection | keySet(kAltM)
	t[TypeCameraHealth] = common | keySet(kStatus, kDetail)
	t[TypeCheckpointPass] = common | keySet(kLane, kPlate, kPlateColor, kVehicleType, kVehicleColor, kSpeedKmh, kHeadingDeg, kConfidence)
	t[TypeFuelPurchase] = common | keySet(kStationID, kBuyerID, kBuyerName, kPlate, kFuel, kContainer, kVolumeL, kPermitNo)
	t[TypeDroneTelemetry] = common | keySet(kMissionID, kAltM, kHeadingDeg, kSpeedMs, kBatteryPct)
	t[TypePatrolPosition] = common | keySet(kSpeedKmh, kHeadingDeg, kStatus)
	t[TypePatrolStatus] = common | keySet(kDispatchID, kStatus)
	t[TypeDeviceHeartbeat] = common
	return t
}()

// normKeys holds, per type, the fields that the normalised form adds.
var normKeys = func() [numTypes]uint64 {
	var t [numTypes]uint64
	for i := range t {
		t[i] = keySet(kAttrs)
	}
	for _, p := range []Type{TypeCameraDetection, TypeDroneDetection, TypeCheckpointPass, TypeFuelPurchase} {
		t[p] |= keySet(kPlateValid)
	}
	t[TypeFuelPurchase] |= keySet(kBuyerPseudonym, kBuyerIDMasked, kBuyerNameMasked)
	return t
}()
